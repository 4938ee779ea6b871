#include "coe/util/file_io.h"

#include "coe/util/error.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

namespace fs = std::filesystem;

namespace coe {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

void write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: cannot write: {}", path.string(), errno_text(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

AtomicFile::AtomicFile(const fs::path& path) : path_(path), tmp_(path.string() + ".tmp-" + std::to_string(::getpid())) {
  // O_EXCL | O_NOFOLLOW: a file or symlink already at the temporary name (planted in a shared
  // directory, or left by a killed process with this pid) is neither followed nor truncated.
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    if (err == EEXIST)
      fail("{}: cannot write: {} exists (left by an earlier process?); remove it", path.string(), tmp_.string());
    fail("{}: cannot write: {}", path.string(), errno_text(err));
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::write(std::string_view data) {
  if (fd_ < 0) fail("{}: already committed", path_.string());
  write_all(fd_, data, path_);
}

void AtomicFile::commit() {
  if (fd_ < 0) fail("{}: already committed", path_.string());
  if (::fsync(fd_) != 0) fail("{}: cannot write: {}", path_.string(), errno_text(errno));
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail("{}: cannot write: {}", path_.string(), errno_text(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail("{}: cannot write: {}", path_.string(), errno_text(err));
  }
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  AtomicFile file(path);
  file.write(content);
  file.commit();
}

void check_writable(const fs::path& path, const std::string& what) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("{} {}: cannot write: {} is not a directory", what, path.string(), dir.string());
  if (::access(dir.c_str(), W_OK) != 0)
    fail("{} {}: cannot write: {}: {}", what, path.string(), dir.string(), errno_text(errno));
}

AppendFile::AppendFile(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open for writing: {}", path.string(), errno_text(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

AppendFile::AppendFile(AppendFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

AppendFile& AppendFile::operator=(AppendFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void AppendFile::append(std::string_view text) {
  if (fd_ < 0) fail("{}: not open for writing", path_.string());
  write_all(fd_, text, path_);
}

void AppendFile::sync() {
  if (fd_ >= 0 && ::fdatasync(fd_) != 0) fail("{}: cannot write: {}", path_.string(), errno_text(errno));
}

void AppendFile::close() {
  if (fd_ < 0) return;
  const int rc = ::close(std::exchange(fd_, -1));
  if (rc != 0) fail("{}: cannot write: {}", path_.string(), errno_text(errno));
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read: {}", path.string(), std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: cannot read: {}", path.string(), std::strerror(errno));
  return text;
}

}  // namespace coe
