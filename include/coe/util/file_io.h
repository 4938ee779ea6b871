#pragma once
// Checked file output for every report, log and checkpoint file coe writes. A failed or short
// write (full disk, missing directory, read-only file system) is a coe::Error naming the file and
// the errno text; whole files are written to a temporary sibling and renamed, so a reader (or a
// crash) never sees half a file.
#include <filesystem>
#include <string>
#include <string_view>

namespace coe {

// A file written in pieces and published whole: the pieces go to `<path>.tmp-<pid>` in the same
// directory (created exclusively: an existing file or symlink there is an error, never followed),
// commit() fsyncs and renames it to `path`. Destroyed without commit(), it removes the temporary
// and leaves `path` as it was.
class AtomicFile {
 public:
  explicit AtomicFile(const std::filesystem::path& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view data);
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
};

// A whole file's bytes; errors name the file.
std::string read_text(const std::filesystem::path& path);

// Writes `content` to `path` atomically (an AtomicFile written at once).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// An append-only text file (metrics.jsonl, logs): every append is written through with write(2)
// and checked, so a failed write is reported at the line that failed, not at exit.
class AppendFile {
 public:
  AppendFile() = default;
  // Opens (creating if needed) for appending.
  explicit AppendFile(const std::filesystem::path& path);
  ~AppendFile();
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&& other) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  bool is_open() const { return fd_ >= 0; }
  void append(std::string_view text);
  // Flushes the file's data to the disk (fdatasync).
  void sync();
  void close();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Fails early (before a long evaluation or benchmark) when `path` cannot be written: its directory
// is missing or not writable. `what` names the flag ("--json"). The write itself is checked again.
void check_writable(const std::filesystem::path& path, const std::string& what);

// Writes all of `data` to `fd`, retrying on EINTR and short writes; throws naming `path` on error.
void write_all(int fd, std::string_view data, const std::filesystem::path& path);

}  // namespace coe
