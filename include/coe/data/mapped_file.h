#pragma once
// A read-only memory map of a whole file. Prepared token files can be larger than RAM is willing
// to spare per process (several ranks read the same split); mapping lets the page cache share them.
#include <cstddef>
#include <string>

namespace coe {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path` read-only; errors name the file and the system's reason.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }  // nullptr for an empty file
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace coe
