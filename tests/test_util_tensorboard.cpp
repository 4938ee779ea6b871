// TensorBoard event files (coe/util/tensorboard.h), read back by an independent reader
// (support/tfevents_reader.h: written from the format's description alone, sharing no code with
// the writer), and by the tensorboard package itself (tools/check_tfevents.py: its record reader and
// EventAccumulator).
#include "coe/util/error.h"
#include "coe/util/run_files.h"
#include "coe/util/subprocess.h"
#include "coe/util/tensorboard.h"
#include "support/expect_error.h"
#include "support/test_env.h"
#include "support/tfevents_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;
using namespace coe::test;  // the independent event-file reader (support/tfevents_reader.h)

// ---- tests -------------------------------------------------------------------------------------------

TEST(TensorBoard, Crc32cMatchesPublishedVectors) {
  const std::string ascending = [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s += static_cast<char>(i);
    return s;
  }();
  // The check value of the CRC-32C catalogue entry, and RFC 3720 (iSCSI) appendix B.4.
  const std::vector<std::pair<std::string, uint32_t>> vectors = {{"123456789", 0xe3069283u},
                                                                 {std::string(32, '\0'), 0x8a9136aau},
                                                                 {std::string(32, '\xff'), 0x62a8ab43u},
                                                                 {ascending, 0x46dd794eu},
                                                                 {"", 0u}};
  for (const auto& [data, crc] : vectors) {
    EXPECT_EQ(coe::crc32c(data), crc) << data.size() << " bytes";
    EXPECT_EQ(reference_crc32c(data), crc) << "the test's own CRC";
  }
  // Continuing a CRC over pieces equals one pass.
  EXPECT_EQ(coe::crc32c("56789", coe::crc32c("1234")), 0xe3069283u);
  // Every event file TensorFlow writes starts with the length 24 (its file_version record)
  // followed by the bytes a3 7f 4b 22: the masked CRC-32C of that length.
  EXPECT_EQ(coe::masked_crc32c(std::string("\x18\0\0\0\0\0\0\0", 8)), 0x224b7fa3u);
}

TEST(TensorBoard, NewFileStartsWithFileVersion) {
  const fs::path dir = coe::test::scratch_dir("tb-new") / "a" / "tb";  // parents are created
  const double before = coe::unix_time_now();
  fs::path path;
  {
    coe::TensorBoardWriter writer(dir);
    path = writer.path();
    // Flushed at construction: a reader sees a valid file at once.
    const auto events = read_events(path);
    ASSERT_EQ(events.size(), 1u);
  }
  const double after = coe::unix_time_now();
  EXPECT_EQ(path.parent_path(), dir);
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  const std::regex name(R"(events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+))");
  std::smatch m;
  const std::string filename = path.filename().string();
  ASSERT_TRUE(std::regex_match(filename, m, name)) << filename;
  EXPECT_EQ(m[2].str(), host);
  EXPECT_EQ(m[3].str(), std::to_string(::getpid()));
  EXPECT_NEAR(std::stod(m[1].str()), before, 2.0);

  const auto events = read_events(path);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[0].writer, "coe");
  EXPECT_FALSE(events[0].has_summary);
  EXPECT_GE(events[0].wall_time, before);
  EXPECT_LE(events[0].wall_time, after);
}

// A metrics.jsonl / val.jsonl pair as a trainer writes them, with awkward values: zero (a oneof
// member that must still be present), tiny and huge magnitudes, negative, more digits than a float.
void write_fake_run_logs(const fs::path& run, int steps) {
  std::string metrics, val;
  for (int s = 1; s <= steps; ++s) {
    nlohmann::ordered_json j;
    j["step"] = s;
    j["loss"] = 5.0 * std::exp(-0.05 * s) + 0.123456789012345;
    j["aux_loss"] = s == 3 ? 0.0 : 1e-3 / s;
    j["lr"] = 3e-4 * s / steps;
    j["grad_norm"] = s == 4 ? 1e30 : 0.5 + 1.0 / s;
    j["tokens"] = 2048;
    j["loss_tokens"] = 2000;
    j["tokens_per_s"] = 12345.678 - s;
    j["time"] = 0.1 * s;
    if (s == 5) j["comm_wait_s"] = -0.0;
    metrics += j.dump() + "\n";
    if (s % 5 == 0) {
      nlohmann::ordered_json v;
      v["step"] = s;
      v["val_loss"] = 4.0 - 0.01 * s;
      v["tokens"] = 640;
      val += v.dump() + "\n";
    }
  }
  coe::test::write_file(run / "metrics.jsonl", metrics);
  coe::test::write_file(run / "val.jsonl", val);
}

// Writes the logs' rows as the trainer is to: every metrics row, every val row, a flush per row.
fs::path write_events_from_logs(const fs::path& run, std::map<int64_t, double>* wall_times = nullptr) {
  coe::TensorBoardWriter writer(run / "tb");
  for (const auto& row : coe::test::read_jsonl(run / "metrics.jsonl")) {
    const int64_t step = row.at("step").get<int64_t>();
    const double wall_time = 1.7e9 + 0.25 * static_cast<double>(step);
    if (wall_times) (*wall_times)[step] = wall_time;
    writer.add_scalars(step, coe::metrics_scalars(row), wall_time);
    writer.flush();
  }
  for (const auto& row : coe::test::read_jsonl(run / "val.jsonl"))
    writer.add_scalars(row.at("step").get<int64_t>(), coe::val_scalars(row));
  writer.close();
  return writer.path();
}

TEST(TensorBoard, ScalarsMatchMetricsToFloatRounding) {
  const fs::path run = coe::test::scratch_dir("tb-scalars");
  write_fake_run_logs(run, 20);
  std::map<int64_t, double> wall_times;
  const fs::path file = write_events_from_logs(run, &wall_times);

  const auto events = read_events(file);
  ASSERT_EQ(events.size(), 1u + 20u + 4u);
  const std::map<std::string, std::string> tag_of = {
      {"loss", "train/loss"},           {"aux_loss", "train/aux_loss"},         {"lr", "train/lr"},
      {"grad_norm", "train/grad_norm"}, {"tokens_per_s", "train/tokens_per_s"}, {"comm_wait_s", "train/comm_wait_s"}};
  const auto metrics = coe::test::read_jsonl(run / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 20u);
  for (size_t i = 0; i < metrics.size(); ++i) {
    const ReadEvent& e = events[1 + i];
    const auto& row = metrics[i];
    EXPECT_TRUE(e.has_summary);
    EXPECT_FALSE(e.file_version.has_value());
    EXPECT_EQ(e.step, row.at("step").get<int64_t>());
    EXPECT_EQ(e.wall_time, wall_times.at(e.step));
    std::map<std::string, float> expected;
    for (const auto& [key, tag] : tag_of)
      if (row.contains(key)) expected[tag] = static_cast<float>(row.at(key).get<double>());
    std::map<std::string, float> got;
    for (const auto& v : e.values) {
      ASSERT_TRUE(v.simple_value.has_value()) << v.tag << " at step " << e.step << ": no simple_value";
      EXPECT_TRUE(got.emplace(v.tag, *v.simple_value).second) << v.tag << " twice";
    }
    ASSERT_EQ(got.size(), expected.size()) << "step " << e.step;
    for (const auto& [tag, value] : expected) {
      ASSERT_TRUE(got.count(tag)) << tag << " missing at step " << e.step;
      // Equal as float32 (bit patterns: -0.0 stays -0.0).
      uint32_t a, b;
      std::memcpy(&a, &got[tag], 4);
      std::memcpy(&b, &value, 4);
      EXPECT_EQ(a, b) << tag << " at step " << e.step << ": " << got[tag] << " vs " << value;
    }
  }
  const auto val = coe::test::read_jsonl(run / "val.jsonl");
  ASSERT_EQ(val.size(), 4u);
  for (size_t i = 0; i < val.size(); ++i) {
    const ReadEvent& e = events[21 + i];
    EXPECT_EQ(e.step, val[i].at("step").get<int64_t>());
    ASSERT_EQ(e.values.size(), 1u);
    EXPECT_EQ(e.values[0].tag, "val/loss");
    EXPECT_EQ(e.values[0].simple_value, static_cast<float>(val[i].at("val_loss").get<double>()));
    EXPECT_GT(e.wall_time, 1.7e9);  // the default: now
  }
}

TEST(TensorBoard, ZLossAndExpertLoadOfALogLine) {
  const auto row = nlohmann::json::parse(
      R"({"step": 50, "loss": 2.5, "z_loss": 0.0017, "router": {"layer0_iter1": {"max_over_mean": 1.83, "cv": 0.42},
          "layer1_iter0": {"max_over_mean": 1.2, "cv": "n/a"}, "bad/name": {"cv": 1.0}, "layer2_iter0": 3}})");
  const coe::Scalars scalars = coe::metrics_scalars(row);
  const std::map<std::string, double> got(scalars.begin(), scalars.end());
  const std::map<std::string, double> want{{"train/loss", 2.5},
                                           {"train/z_loss", 0.0017},
                                           {"router/layer0_iter1/max_over_mean", 1.83},
                                           {"router/layer0_iter1/cv", 0.42},
                                           {"router/layer1_iter0/max_over_mean", 1.2}};
  EXPECT_EQ(got, want) << "non-numbers, names with other characters and non-objects are left out";
}

TEST(TensorBoard, NonFiniteAndExtremeValuesRoundTrip) {
  const fs::path dir = coe::test::scratch_dir("tb-extreme");
  const double inf = std::numeric_limits<double>::infinity();
  const coe::Scalars values = {{"a/nan", std::nan("")}, {"a/inf", inf},  {"a/-inf", -inf}, {"a/big", 1e300},
                               {"a/tiny", 1e-300},      {"a/zero", 0.0}, {"a/neg", -2.5},  {"ünïcode/λ", 1.0}};
  coe::TensorBoardWriter writer(dir);
  writer.add_scalars(std::numeric_limits<int64_t>::max(), values, 1.5);
  writer.add_scalars(-3, {{"a/neg_step", 1.0}}, 2.5);
  writer.add_scalar("a/step0", 0, 7.0, 3.5);
  writer.close();
  const auto events = read_events(writer.path());
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[1].step, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(events[1].wall_time, 1.5);
  ASSERT_EQ(events[1].values.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(events[1].values[i].tag, values[i].first);
    const float want = static_cast<float>(values[i].second);
    const float got = events[1].values[i].simple_value.value();
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(got)) << values[i].first;
    else EXPECT_EQ(got, want) << values[i].first;
  }
  EXPECT_EQ(events[2].step, -3);
  EXPECT_EQ(events[3].step, 0);
  EXPECT_EQ(events[3].values.at(0).simple_value, 7.0f);
}

TEST(TensorBoard, EventsAppearAtFlush) {
  const fs::path dir = coe::test::scratch_dir("tb-flush");
  coe::TensorBoardWriter writer(dir);
  const auto header_size = fs::file_size(writer.path());
  writer.add_scalar("train/loss", 1, 3.0);
  writer.add_scalar("train/loss", 2, 2.0);
  EXPECT_EQ(fs::file_size(writer.path()), header_size) << "buffered until flush()";
  writer.flush();
  EXPECT_EQ(read_events(writer.path()).size(), 3u);
  writer.add_scalar("train/loss", 3, 1.0);
  writer.close();  // close() flushes
  EXPECT_EQ(read_events(writer.path()).size(), 4u);
  coe::test::expect_error([&] { writer.add_scalar("train/loss", 4, 1.0); }, {writer.path().string(), "closed"});
}

// An interrupted run resumed from its checkpoint at step 5, after the killed invocation had logged
// steps 6 and 7: the cut-back and a second writer (another file) give each step exactly once, with
// the resumed invocation's values.
TEST(TensorBoard, ResumedRunHasEachStepOnce) {
  const fs::path dir = coe::test::scratch_dir("tb-resume") / "tb";
  {
    coe::TensorBoardWriter first(dir);
    for (int s = 1; s <= 7; ++s) first.add_scalars(s, {{"train/loss", 10.0 + s}, {"train/lr", 0.1 * s}});
    first.add_scalar("val/loss", 5, 9.5);
    first.add_scalar("val/loss", 7, 9.0);  // validated after the checkpoint: redone after resume
  }
  const auto notes = coe::cut_back_event_files(dir, 5);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("3 event(s) after step 5"), std::string::npos) << notes[0];
  EXPECT_EQ(notes[0].find('\n'), std::string::npos);
  // A second cut-back changes nothing.
  EXPECT_TRUE(coe::cut_back_event_files(dir, 5).empty());
  {
    coe::TensorBoardWriter second(dir);  // same process, same second: a new name all the same
    for (int s = 6; s <= 10; ++s) second.add_scalars(s, {{"train/loss", 20.0 + s}, {"train/lr", 0.1 * s}});
    second.add_scalar("val/loss", 10, 8.0);
  }
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1].string(), files[0].string() + ".1");
  for (const auto& f : files) {
    const auto events = read_events(f);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events[0].file_version, "brain.Event:2") << f;
  }
  const auto scalars = union_of_scalars(dir);
  for (int s = 1; s <= 10; ++s) {
    EXPECT_EQ(scalars.at({"train/loss", s}), static_cast<float>((s <= 5 ? 10.0 : 20.0) + s)) << s;
    EXPECT_EQ(scalars.at({"train/lr", s}), static_cast<float>(0.1 * s)) << s;
  }
  EXPECT_EQ(scalars.size(), 10u + 10u + 2u);
  EXPECT_EQ(scalars.at({"val/loss", 5}), 9.5f);
  EXPECT_EQ(scalars.at({"val/loss", 10}), 8.0f);
  EXPECT_FALSE(scalars.count({"val/loss", 7}));
}

TEST(TensorBoard, CutBackHandlesTornEmptiedAndForeignFiles) {
  const fs::path dir = coe::test::scratch_dir("tb-cut");
  fs::path torn, emptied;
  {
    coe::TensorBoardWriter a(dir);
    a.add_scalar("x", 1, 1.0);
    a.add_scalar("x", 2, 2.0);
    a.close();
    torn = a.path();
    coe::TensorBoardWriter b(dir);
    b.add_scalar("x", 9, 9.0);
    b.close();
    emptied = b.path();
  }
  // A process killed in the middle of a write: all but the last 5 bytes of another record.
  const std::string whole = read_file(torn);
  const size_t second_record = 16 + little_endian(whole, 0, 8);
  const size_t second_size = 16 + little_endian(whole, second_record, 8);
  {
    std::ofstream out(torn, std::ios::binary | std::ios::app);
    out << whole.substr(second_record, second_size - 5);
  }
  // Files coe did not write are left alone, whatever they hold.
  const std::string foreign_bytes = "not a TFRecord at all";
  coe::test::write_file(dir / "events.out.tfevents.123.other.1", foreign_bytes);
  const auto notes = coe::cut_back_event_files(dir, 2);
  ASSERT_EQ(notes.size(), 2u) << notes[0];
  EXPECT_NE(notes[0].find("torn or damaged record"), std::string::npos) << notes[0];
  EXPECT_NE(notes[1].find("removed (1 event(s) after step 2; nothing left)"), std::string::npos) << notes[1];
  EXPECT_EQ(read_file(torn), whole);
  EXPECT_FALSE(fs::exists(emptied));
  EXPECT_EQ(read_file(dir / "events.out.tfevents.123.other.1"), foreign_bytes);
  EXPECT_EQ(read_events(torn).size(), 3u);
  // No temporary is left behind, and a missing directory is nothing to cut.
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find("cut-back"), std::string::npos) << e.path();
  EXPECT_TRUE(coe::cut_back_event_files(dir / "missing", 0).empty());
}

TEST(TensorBoard, BadInputIsOneLineError) {
  const fs::path dir = coe::test::scratch_dir("tb-errors");
  coe::test::write_file(dir / "file", "x");
  coe::test::expect_error([&] { coe::TensorBoardWriter w(dir / "file"); }, {(dir / "file").string(), "cannot create"});
  coe::test::expect_error([&] { coe::TensorBoardWriter w(dir / "file" / "tb"); }, {(dir / "file").string()});
  coe::TensorBoardWriter writer(dir / "tb");
  coe::test::expect_error([&] { writer.add_scalar("", 1, 1.0); }, {"tag ''"});
  coe::test::expect_error([&] { writer.add_scalar("a\nb", 1, 1.0); }, {"tag", "control characters"});
  coe::test::expect_error([&] { writer.add_scalar("bad\xff", 1, 1.0); }, {"UTF-8"});
  coe::test::expect_error([&] { writer.add_scalar(std::string(1025, 'a'), 1, 1.0); }, {"1024 bytes"});
  writer.close();
  EXPECT_EQ(read_events(writer.path()).size(), 1u) << "nothing of a rejected event is written";
}

// tools/check_tfevents.py: the tensorboard package reads the same files, record by record through
// its own TFRecord reader and as a whole through EventAccumulator; every (tag, step, value, wall
// time) equals the independent reader's, and so the logs'.
TEST(TensorBoard, TheTensorboardPackageReadsTheFiles) {
  const fs::path run = coe::test::scratch_dir("tb-python");
  write_fake_run_logs(run, 12);
  write_events_from_logs(run);
  {
    coe::TensorBoardWriter second(run / "tb");
    second.add_scalars(13, {{"train/loss", 0.0}, {"ünïcode/λ", -1.25}}, 1.8e9);
  }
  const nlohmann::json tb = coe::test::read_with_tensorboard(run / "tb");
  EXPECT_EQ(tb.at("files"), 2);
  EXPECT_EQ(tb.at("records"), 1 + 12 + 2 + 1 + 1);
  EXPECT_EQ(tb.at("file_version"), "brain.Event:2");
  EXPECT_EQ(tb.at("writer"), "coe");
  std::map<std::pair<std::string, int64_t>, std::pair<float, double>> seen;
  for (const auto& [tag, events] : tb.at("scalars").items())
    for (const auto& e : events)
      EXPECT_TRUE(seen.emplace(std::make_pair(tag, e[0].get<int64_t>()),
                               std::make_pair(static_cast<float>(e[1].get<double>()), e[2].get<double>()))
                      .second)
          << tag << " step " << e[0];
  size_t expected_values = 0;
  for (const auto& f : event_files(run / "tb"))
    for (const auto& e : read_events(f))
      for (const auto& v : e.values) {
        ++expected_values;
        const auto it = seen.find({v.tag, e.step});
        ASSERT_NE(it, seen.end()) << v.tag << " at step " << e.step << " is missing from TensorBoard's reading";
        uint32_t a, b;  // equal as float32 bit patterns: -0.0 stays -0.0, 1e30 stays 1e30
        std::memcpy(&a, &it->second.first, 4);
        std::memcpy(&b, &*v.simple_value, 4);
        EXPECT_EQ(a, b) << v.tag << " at step " << e.step;
        EXPECT_EQ(it->second.second, e.wall_time) << v.tag << " at step " << e.step;
      }
  EXPECT_EQ(seen.size(), expected_values);
  EXPECT_EQ(seen.at({"ünïcode/λ", 13}).first, -1.25f);
}

}  // namespace
