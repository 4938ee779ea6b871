#pragma once
// Paths written in config files (docs/training.md#paths-in-config-files): relative to the file that
// wrote them, or under the data root $COE_DATA, the one variable a path may begin with. Configs are
// data: nothing else is expanded, and no shell reads them.
#include <filesystem>
#include <string>

namespace coe {

// The data root that `$COE_DATA/...` names: the environment variable COE_DATA (a relative value is
// relative to the working directory), else the data/ folder of the coe checkout this library was
// built from. tools/download-data.sh fills the latter with the data the shipped configs name.
struct DataRoot {
  std::filesystem::path dir;  // absolute
  bool from_env = false;      // COE_DATA was set
  // "COE_DATA=/srv/data" or "COE_DATA unset: the checkout's data/ folder /src/coe/data".
  std::string describe() const;
};
// Throws when COE_DATA is set but empty.
DataRoot data_root();

// A path as a config file wrote it, made absolute and normal: a leading `$COE_DATA/` or
// `${COE_DATA}/` (or the bare variable) becomes data_root(), any other relative path is taken
// relative to `base_dir` (the directory of the file that wrote it; "" the working directory).
// Throws a reason (no key) for any other leading `$` or `~`, which would need a shell.
std::string resolve_config_path(const std::string& written, const std::string& base_dir);

// Throws "<what>: <path> not found" when `path` does not exist; for a path under the data root the
// message names $COE_DATA, its value and tools/download-data.sh. `what` names the file and key
// ("run.yaml: data.train_files").
void check_path_exists(const std::string& what, const std::string& path);

}  // namespace coe
