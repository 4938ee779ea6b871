#include "coe/util/json_limits.h"

#include "coe/util/error.h"

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

}  // namespace coe
