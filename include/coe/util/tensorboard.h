#pragma once
// TensorBoard event files written without TensorFlow, protobuf or Python, so that
// `tensorboard --logdir runs/` shows coe's scalars while a run trains.
//
// An event file is a sequence of TFRecords,
//   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes |
//   `length` bytes of data        | uint32 masked CRC-32C of the data
// (masked: ((crc >> 15) | (crc << 17)) + 0xa282ead8), each data one serialized tensorboard.Event
// (tensorboard/compat/proto/event.proto and summary.proto; only these fields are written):
//   Event          { double wall_time = 1; int64 step = 2; string file_version = 3;
//                    Summary summary = 5; SourceMetadata source_metadata = 10; }
//   Summary        { repeated Value value = 1; }
//   Summary.Value  { string tag = 1; float simple_value = 2; }
//   SourceMetadata { string writer = 1; }
// The first record of a file is {wall_time, file_version: "brain.Event:2", source_metadata:
// {writer: "coe"}}; the writer name marks the files coe may cut back (cut_back_event_files).
//
// How a trainer uses it (rank 0 only: the process that writes the run directory):
//
//   // at start, after the resume decision, where metrics.jsonl is cut back to the resumed step
//   // (0 for a fresh run), before the first step:
//   for (const auto& note : cut_back_event_files(out_dir / "tb", resumed_step)) log(note);
//   TensorBoardWriter tb(out_dir / "tb");
//   // every optimizer step, with the values that go to metrics.jsonl:
//   tb.add_scalars(step, metrics_scalars(metrics_row));   // run_files.h: the row's numbers as tags
//   // after each validation, with the values that go to val.jsonl:
//   tb.add_scalars(step, val_scalars(val_row));
//   // at every console log line, and after the last step / before exiting on a signal:
//   tb.flush();
//
// Resume: every coe-train invocation opens a new file (a fresh name; never appends to an old
// one), whose steps continue after the resumed step. TensorBoard reads all event files of a
// directory as one run and orders the points by step, so the files of one run directory make one
// curve per tag. A killed invocation may have logged steps after its last checkpoint; those are
// trained again after the resume, so cut_back_event_files removes them first (as metrics.jsonl is
// cut back), and the union of the files holds each step once. A sweep's variants write
// <sweep out_dir>/<variant>/tb, so `tensorboard --logdir <sweep out_dir>` shows one run per
// variant.
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coe {

// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), continued from `crc` (0 to start).
uint32_t crc32c(std::string_view data, uint32_t crc = 0);
// TFRecord's masked CRC-32C: a CRC stored next to the data it covers is rotated and offset so
// that data which itself contains CRCs does not checksum to patterns.
uint32_t masked_crc32c(std::string_view data);

// Seconds since the Unix epoch (an event's wall_time), with sub-second resolution.
double unix_time_now();

// (tag, value) pairs of one step.
using Scalars = std::vector<std::pair<std::string, double>>;

class TensorBoardWriter {
 public:
  // Creates `dir` (and its parents) and a new event file in it,
  // events.out.tfevents.<unix seconds, 10 digits>.<host>.<pid> (".1", ".2", ... appended when
  // that name exists: a second writer of the same process in the same second), and writes the
  // file_version event. Throws a one-line coe::Error naming the directory or file and the errno
  // text.
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  // Writes what is still buffered; a failure here is printed as one warning line on stderr
  // (a destructor cannot throw): call close() to have it thrown.
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event {wall_time, step, summary} holding `value` rounded to float32 (simple_value).
  // Tags are non-empty UTF-8 without control characters, at most 1024 bytes ('/' groups them in
  // TensorBoard: "train/loss"). Events are buffered until flush() (or 1 MiB of them).
  void add_scalar(const std::string& tag, int64_t step, double value, double wall_time = unix_time_now());
  // One event holding all `values` of a step (empty: nothing is written).
  void add_scalars(int64_t step, const Scalars& values, double wall_time = unix_time_now());
  // One event holding `text` for TensorBoard's text plugin (Markdown; tab TEXT), e.g. the run's
  // resolved configuration.
  void add_text(const std::string& tag, int64_t step, std::string_view text, double wall_time = unix_time_now());
  // Writes the buffered events with one write(2) (checked; no fsync): a TensorBoard reading the
  // directory sees them now.
  void flush();
  // flush(), then closes the file; later add_* calls are errors.
  void close();

  const std::filesystem::path& path() const { return path_; }

 private:
  void append_record(std::string_view event);

  std::filesystem::path path_;
  int fd_ = -1;
  std::string buffer_;
};

// Cuts the event files coe wrote in `dir` back to step `max_step`, as the trainer cuts
// metrics.jsonl back when it resumes: events with a step after `max_step` are removed (a file
// left with no summary is deleted; a changed one is rewritten whole and renamed into place), and
// a torn last record (a process killed while writing it) or a damaged record with everything
// after it is dropped. Files not written by coe (no source_metadata.writer "coe" in their first
// record) are left alone. Returns one line per file changed, saying what was removed. A missing
// `dir` is no error (nothing to cut). Call it while no writer has a file of `dir` open (the
// trainer holds the run directory's lock), before opening this invocation's writer.
std::vector<std::string> cut_back_event_files(const std::filesystem::path& dir, int64_t max_step);

// The steps of the events in coe's event files of `dir` that hold a value whose tag starts with
// `tag_prefix` ("train/", "val/"): a resumed run writes the logged steps a kill kept from the
// event files (the writer's buffer), so that they hold exactly the steps of metrics.jsonl.
std::set<int64_t> event_steps(const std::filesystem::path& dir, std::string_view tag_prefix);

}  // namespace coe
