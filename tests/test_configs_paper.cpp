// The paper's grid as shipped in configs/: every run config loads (base files resolved) with the
// model, data and recipe of its paper run, and every sweep file resolves all its variants.
#include "coe/train/sweep.h"
#include "coe/train/train_config.h"

#include "support/test_env.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <string>

namespace {

namespace fs = std::filesystem;

TEST(PaperConfigs, EveryPaperConfigLoadsWithItsGrid) {
  struct Expect {
    const char* name;
    int64_t routed, shared, k, c, layers;
  };
  const Expect grid[] = {{"moe-k8", 63, 1, 8, 1, 4},
                         {"coe-c2-k4", 63, 1, 4, 2, 4},
                         {"coe-c2-k8", 63, 1, 8, 2, 4},
                         {"moe-k16", 63, 1, 16, 1, 4},
                         {"moe-k24", 63, 1, 24, 1, 4},
                         {"coe-c2-k4-n48", 47, 1, 4, 2, 4},
                         {"moe-k8-l8", 63, 1, 8, 1, 8},
                         {"moe-k8-l12", 63, 1, 8, 1, 12},
                         {"dense-c1", 8, 0, 8, 1, 4},
                         {"dense-c2", 8, 0, 8, 2, 4},
                         {"coe-c2-k8-shared-gate", 63, 1, 8, 2, 4},
                         {"coe-c2-k8-outer-residual", 63, 1, 8, 2, 4},
                         {"coe-c3-k8", 63, 1, 8, 3, 4},
                         {"coe-c4-k8", 63, 1, 8, 4, 4},
                         {"coe-c4-k4", 63, 1, 4, 4, 4},
                         {"coe-c4-k2", 63, 1, 2, 4, 4},
                         {"moe-k32", 63, 1, 32, 1, 4}};
  for (const auto& g : grid) {
    SCOPED_TRACE(g.name);
    const fs::path p = coe::test::source_root() / "configs" / "paper" / (std::string(g.name) + ".yaml");
    const coe::TrainConfig c = coe::load_train_config(p.string());
    EXPECT_EQ(c.model.n_routed_experts, g.routed);
    EXPECT_EQ(c.model.n_shared_experts, g.shared);
    EXPECT_EQ(c.model.num_experts_per_tok, g.k);
    EXPECT_EQ(c.model.inner_iter, g.c);
    EXPECT_EQ(c.model.num_hidden_layers, g.layers);
    EXPECT_EQ(c.model.hidden_size, 1024);
    EXPECT_EQ(c.model.vocab_size, 102400);
    EXPECT_EQ(c.model.use_igate, std::string(g.name) != "coe-c2-k8-shared-gate");
    EXPECT_EQ(c.model.outer_residual, std::string(g.name) == "coe-c2-k8-outer-residual");
    EXPECT_EQ(c.trainer.global_batch, 64);
    EXPECT_EQ(c.trainer.total_steps, 1000);
    EXPECT_EQ(c.data.max_length, 512);
    EXPECT_EQ(c.trainer.val_batches * c.trainer.val_micro_batch, 100);  // the reference's 100 held-out records
  }
  // Every file of configs/paper is in the grid above.
  for (const auto& entry : fs::directory_iterator(coe::test::source_root() / "configs" / "paper")) {
    const std::string stem = entry.path().stem().string();
    EXPECT_TRUE(std::any_of(std::begin(grid), std::end(grid), [&](const Expect& g) { return stem == g.name; }))
        << entry.path() << " is not checked";
  }
  for (const auto& entry : fs::directory_iterator(coe::test::source_root() / "configs" / "sweeps")) {
    SCOPED_TRACE(entry.path().string());
    const auto spec = coe::load_sweep(entry.path().string());
    EXPECT_NO_THROW(coe::resolve_variants(spec));
  }
}

}  // namespace
