#pragma once
// Preparation: raw record files -> a prepared dataset directory (prepared.h) with a "train" split
// and, when configured, a "val" split.
//
// <dir>/manifest.json records the recipe (tokenizer name + fingerprint, the size and xxh64 of
// every input file, the text format, the split parameters). Preparing again with the same recipe
// reuses the directory; any change (an input's content, the tokenizer, the template, the split)
// rebuilds it. A build is written to a sibling temporary directory and renamed into place, so an
// error never leaves a half-written dataset: either the old one or nothing stays.
#include "coe/data/data_config.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace coe {

struct PrepareOptions {
  bool force = false;                           // rebuild even when the recipe matches
  std::function<void(const std::string&)> log;  // progress / decision lines (may be empty)
};

struct PrepareResult {
  std::string dir;
  bool reused = false;
  std::string reason;  // why it was reused or (re)built, one line
  int64_t train_records = 0, train_tokens = 0;
  int64_t val_records = 0, val_tokens = 0;  // 0 when there is no val split
};

// Prepares cfg.train_files (and cfg.val_files, or a split of the training records) into
// cfg.prepared_dir. With no train_files, cfg.prepared_dir must already hold a prepared dataset,
// which is used as is.
PrepareResult prepare_dataset(const DataConfig& cfg, const PrepareOptions& options = {});

// The manifest of a prepared dataset directory; throws when `dir` is not one.
nlohmann::json read_manifest(const std::string& dir);

}  // namespace coe
