#include "coe/util/json_limits.h"

#include "coe/util/error.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

namespace coe {

nlohmann::json::parser_callback_t json_depth_limit(std::string what, int max_depth) {
  return [what = std::move(what), max_depth](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    // `depth` is the number of enclosing containers; a container starting at depth D is level D + 1.
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= max_depth)
      fail("{}: JSON nested deeper than {} levels", what, max_depth);
    return true;
  };
}

std::string read_bounded_file(const std::string& path, std::uintmax_t max_bytes, const std::string& kind) {
  auto too_large = [&](const std::string& size) {
    fail("{}: {} bytes, more than the {}-byte limit for {}", path, size, max_bytes, kind);
  };
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    const std::uintmax_t size = std::filesystem::file_size(path, ec);
    if (!ec && size > max_bytes) too_large(std::to_string(size));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read: {}", path, std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > max_bytes) too_large("at least " + std::to_string(text.size()));
  }
  if (in.bad()) fail("{}: cannot read: {}", path, std::strerror(errno));
  return text;
}

nlohmann::json read_json_file(const std::string& path, const std::string& kind, std::uintmax_t max_bytes) {
  return nlohmann::json::parse(read_bounded_file(path, max_bytes, kind), json_depth_limit(path));
}

}  // namespace coe
