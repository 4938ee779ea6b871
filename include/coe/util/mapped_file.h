#pragma once
// A private memory map of a whole file. Prepared token files and checkpoints can be larger than
// RAM is willing to spare per process (several ranks read the same split); mapping lets the page
// cache share them, and a reader copies a file's bytes once, to where they are used, not first
// into a buffer. The file must not shrink while it is mapped (reading a page past its new end is
// SIGBUS); coe replaces the files it writes by rename, which leaves a mapped one intact.
#include <cstddef>
#include <string>

namespace coe {

class MappedFile {
 public:
  enum class Access {
    kReadOnly,     // writing to the pages faults
    kCopyOnWrite,  // a page written to becomes the process's own copy; the file never changes
  };

  MappedFile() = default;
  // Maps `path`; errors name the file and the system's reason.
  explicit MappedFile(const std::string& path, Access access = Access::kReadOnly);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }  // nullptr for an empty file
  // The pages of an Access::kCopyOnWrite mapping, writable and private to this process (an error
  // for a read-only one).
  char* writable_data() const;
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  Access access_ = Access::kReadOnly;
};

}  // namespace coe
