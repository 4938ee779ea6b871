// DistContext and GradReducer over Gloo between real processes on this machine: the collectives,
// the bucketed gradient sum (with hooks, with parameters only some ranks touched), and the failure
// paths: a killed rank, a hung rank, a stopped rank, a missing rank and mismatched world sizes all
// end every process with an error naming the rank, in bounded time.
//
// The ranks are this test binary itself, re-run with --gtest_filter=DistWorker.Run and the scenario
// in COE_DIST_TEST_ROLE (the worker test is skipped in a normal run).
#include "coe/distributed/context.h"
#include "coe/distributed/grad_reducer.h"

#include "support/dist_launch.h"
#include "support/test_env.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace {

namespace fs = std::filesystem;
using coe::DistContext;
using coe::DistError;
using coe::DistOptions;

std::string role() {
  const char* r = std::getenv("COE_DIST_TEST_ROLE");
  return r ? r : "";
}

double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

// ---- the worker side ------------------------------------------------------------------------

void check_collectives(DistContext& ctx) {
  const int r = ctx.rank();
  ASSERT_EQ(ctx.world_size(), 2);
  EXPECT_EQ(ctx.backend(), "gloo");
  EXPECT_EQ(ctx.is_main(), r == 0);

  at::Tensor t = at::full({5}, static_cast<float>(r + 1));
  ctx.all_reduce_sum(t);
  EXPECT_TRUE(at::equal(t, at::full({5}, 3.0f)));

  const auto counts = ctx.all_reduce_sum(std::vector<int64_t>{r, 10, int64_t{1} << 40});
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 20, int64_t{2} << 40}));
  const auto sums = ctx.all_reduce_sum(std::vector<double>{r == 0 ? 0.1 : 0.2});
  EXPECT_EQ(sums, std::vector<double>{0.1 + 0.2});

  at::Tensor b = at::full({3}, static_cast<float>(r));
  ctx.broadcast(b, 1);
  EXPECT_TRUE(at::equal(b, at::ones({3})));

  auto op = ctx.all_reduce_sum_async(at::full({4}, 2.0), "async all-reduce");
  op->wait();

  // Parameters broadcast in several small buckets.
  at::manual_seed(100);  // rank 0's
  const std::vector<at::Tensor> expected{at::randn({1000}), at::randn({10, 10}), at::randn({7})};
  at::manual_seed(100 + r);
  std::vector<at::Tensor> mine{at::randn({1000}).requires_grad_(), at::randn({10, 10}).requires_grad_(),
                               at::randn({7}).requires_grad_()};
  ctx.broadcast_tensors(mine, 0, /*bucket_mb=*/0.002);
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(at::equal(mine[i], expected[i])) << i;
  EXPECT_EQ(ctx.first_mismatch(mine), -1);
  if (r == 1) {
    at::NoGradGuard g;
    mine[1][3][4].add_(1e-6);
  }
  EXPECT_EQ(ctx.first_mismatch(mine), 1);

  EXPECT_EQ(ctx.broadcast_string(r == 0 ? "from rank 0" : "ignored", "a string"), "from rank 0");

  // main_first: rank 0's side effect is visible to the others afterwards; its failure reaches them.
  const fs::path file = fs::path(std::getenv("COE_DIST_TEST_DIR")) / "main_first.txt";
  std::string seen;
  ctx.main_first(
      "writing a file", [&] { std::ofstream(file) << "written by rank 0"; },
      [&] {
        std::ifstream in(file);
        std::getline(in, seen);
      });
  if (r == 1) EXPECT_EQ(seen, "written by rank 0");
  if (r == 0) {
    EXPECT_THROW(ctx.main_first("a failing step", [] { throw std::runtime_error("boom"); }), std::runtime_error);
  } else {
    try {
      ctx.main_first("a failing step", [] {});
      ADD_FAILURE() << "rank 0's failure did not reach rank 1";
    } catch (const DistError& e) {
      EXPECT_STREQ(e.what(), "rank 0 failed during a failing step: boom");
    }
  }
  ctx.barrier();
}

// Two micro-batches; in both, w1 and w4 get (i + 1) * (r + 1); w2 only on rank 0 in the first
// micro-batch (so its bucket is not launched by the hooks); w3 never.
void check_grad_reducer(DistContext& ctx, bool overlap) {
  const int r = ctx.rank();
  std::vector<at::Tensor> params{at::zeros({4, 3}).requires_grad_(), at::zeros({5}).requires_grad_(),
                                 at::zeros({2}).requires_grad_(), at::zeros({1000}).requires_grad_()};
  coe::GradReducerOptions o;
  o.bucket_mb = 0.001;  // ~262 floats: w4 alone, the rest together
  o.overlap = overlap;
  coe::GradReducer reducer(ctx, params, o);
  EXPECT_GE(reducer.num_buckets(), 2);
  for (int step = 0; step < 2; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    for (int i = 0; i < 2; ++i) {
      reducer.arm(i == 1);
      const double c = (i + 1) * (r + 1);
      at::Tensor loss = (params[0] * c).sum() + (params[3] * c).sum();
      if (r == 0 && i == 0) loss = loss + params[1].sum();
      loss.backward();
    }
    reducer.finish();
    // sum over i, r of (i + 1) * (r + 1) = 3 * 3
    EXPECT_TRUE(at::equal(params[0].grad(), at::full({4, 3}, 9.0f)));
    EXPECT_TRUE(at::equal(params[3].grad(), at::full({1000}, 9.0f)));
    ASSERT_TRUE(params[1].grad().defined()) << "rank " << r;
    EXPECT_TRUE(at::equal(params[1].grad(), at::ones({5})));
    EXPECT_FALSE(params[2].grad().defined()) << "no rank had a gradient: it must stay undefined";
    if (overlap) EXPECT_GE(reducer.stats().launched_by_hooks, 1);
    else EXPECT_EQ(reducer.stats().launched_by_hooks, 0);
  }
}

// Four ranks: groups of two ({0,1}, {2,3} and {0,2}, {1,3}), all-to-all with uneven and empty
// splits, all-gather and reduce-scatter, on the job and on the groups, interleaved.
void check_groups(DistContext& ctx) {
  const int r = ctx.rank();
  ASSERT_EQ(ctx.world_size(), 4);
  auto pair = ctx.group("pair", r < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3});
  auto stride = ctx.group("stride", r % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{1, 3});
  auto alone = ctx.group("alone", {r});
  EXPECT_EQ(pair->world_size(), 2);
  EXPECT_EQ(pair->rank(), r % 2);
  EXPECT_EQ(stride->rank(), r / 2);
  EXPECT_EQ(pair->global_rank(1), r < 2 ? 1 : 3);
  EXPECT_FALSE(alone->distributed());
  EXPECT_THROW(ctx.group("bad", {r == 0 ? 1 : 0}), coe::Error);

  at::Tensor t = at::full({3}, static_cast<float>(r + 1));
  pair->all_reduce_sum(t);
  EXPECT_TRUE(at::equal(t, at::full({3}, r < 2 ? 3.0f : 7.0f)));
  at::Tensor u = at::full({2}, static_cast<float>(r + 1));
  stride->all_reduce_sum(u);
  EXPECT_TRUE(at::equal(u, at::full({2}, r % 2 == 0 ? 4.0f : 6.0f)));

  // Job all-to-all: rank r sends q + r rows to rank q (rank 0 sends none to rank 0), each row
  // [r, q, i] (i: the row's index among them).
  std::vector<int64_t> send(4), recv(4);
  std::vector<at::Tensor> rows;
  for (int q = 0; q < 4; ++q) {
    send[q] = q + r;
    recv[q] = r + q;
    for (int i = 0; i < q + r; ++i) rows.push_back(at::tensor({float(r), float(q), float(i)}));
  }
  EXPECT_EQ(ctx.all_to_all_counts(send), recv);
  at::Tensor in = rows.empty() ? at::empty({0, 3}) : at::stack(rows);
  at::Tensor out = ctx.all_to_all(in, send, recv);
  ASSERT_EQ(out.size(0), 4 * r + 6);
  int64_t row = 0;
  for (int q = 0; q < 4; ++q)
    for (int i = 0; i < q + r; ++i, ++row)
      EXPECT_TRUE(at::equal(out[row], at::tensor({float(q), float(r), float(i)}))) << "row " << row;
  // Within a pair: only one direction carries rows, the other is empty.
  at::Tensor one = r % 2 == 0 ? at::full({2, 5}, float(r)) : at::empty({0, 5});
  const std::vector<int64_t> ps = r % 2 == 0 ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{0, 0};
  const std::vector<int64_t> pr = r % 2 == 0 ? std::vector<int64_t>{0, 0} : std::vector<int64_t>{2, 0};
  at::Tensor got = pair->all_to_all(one, ps, pr);
  EXPECT_EQ(got.size(0), r % 2 == 0 ? 0 : 2);
  if (r % 2 == 1) EXPECT_TRUE(at::equal(got, at::full({2, 5}, float(r - 1))));

  at::Tensor g = stride->all_gather(at::full({2, 2}, static_cast<double>(r)));
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_TRUE(at::equal(g[0], at::full({2, 2}, double(r % 2))));
  EXPECT_TRUE(at::equal(g[1], at::full({2, 2}, double(r % 2 + 2))));
  at::Tensor all = ctx.all_gather(at::full({1}, static_cast<int64_t>(r)));
  EXPECT_TRUE(at::equal(all.view({-1}), at::arange(4, at::kLong)));

  // Reduce-scatter of [0..7] + r over the job: chunk r of the sum.
  at::Tensor rs = ctx.reduce_scatter_sum(at::arange(8, at::kFloat) + r);
  EXPECT_TRUE(at::equal(rs, (at::arange(8, at::kFloat) * 4 + 6).narrow(0, 2 * r, 2)));
  at::Tensor prs = pair->reduce_scatter_sum(at::ones({6}) * (r + 1));
  EXPECT_TRUE(at::equal(prs, at::full({3}, r < 2 ? 3.0f : 7.0f)));
  EXPECT_THROW(pair->broadcast_string("x", "a string"), coe::Error);
  ctx.barrier();
}

TEST(DistWorker, Run) {
  const std::string scenario = role();
  if (scenario.empty()) GTEST_SKIP() << "only run as a rank of the tests below";
  DistOptions options;
  options.timeout_s = env_double("COE_DIST_TEST_TIMEOUT", 30);
  const auto env = coe::dist_env_from_process();
  const int rank = env.rank;
  try {
    DistContext ctx(env, options);
    if (scenario == "collectives") {
      check_collectives(ctx);
      check_grad_reducer(ctx, true);
      check_grad_reducer(ctx, false);
      ctx.finish();
      return;
    }
    if (scenario == "groups") {
      check_groups(ctx);
      ctx.finish();
      return;
    }
    if (scenario == "sigpipe") {
      // What a send to a killed peer meets: a write to a closed reader is an error, not a death.
      int fds[2];
      ASSERT_EQ(::pipe(fds), 0);
      ::close(fds[0]);
      EXPECT_EQ(::write(fds[1], "x", 1), -1);
      EXPECT_EQ(errno, EPIPE);
      ::close(fds[1]);
      ctx.finish();
      return;
    }
    // Failure scenarios: all-reduces until rank 1 misbehaves after the fifth.
    for (int i = 0;; ++i) {
      at::Tensor t = at::ones({1000});
      ctx.all_reduce_sum(t, "test all-reduce");
      if (rank == 0 && i == 4 && scenario == "stop-main") std::raise(SIGSTOP);
      if (rank == 1 && i == 4) {
        if (scenario == "kill") std::raise(SIGKILL);
        if (scenario == "stop") std::raise(SIGSTOP);
        if (scenario == "hang") std::this_thread::sleep_for(std::chrono::seconds(60));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (i > 2000) break;
    }
    ADD_FAILURE() << "no failure seen";
  } catch (const DistError& e) {
    // The context was destroyed while unwinding: that must not hang either.
    std::printf("CAUGHT rank %d: %s\n", rank, e.what());
    std::fflush(stdout);
    std::exit(2);
  }
}

// ---- the launching side ------------------------------------------------------------------------

class DistContextTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = coe::test::make_temp_dir("dist-context"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `world` ranks of `scenario`; env_for(rank) may adjust a rank's variables.
  std::vector<coe::test::RankProcess> launch(
      const std::string& scenario, int world, double timeout_s, double deadline_s,
      const std::function<void(int, std::map<std::string, std::string>&)>& adjust = {}, std::vector<int> ranks = {},
      int primary = -1) {
    const int port = coe::test::free_port();
    if (ranks.empty())
      for (int r = 0; r < world; ++r) ranks.push_back(r);
    std::vector<coe::test::RankProcess> procs;
    for (int r : ranks) {
      auto env = coe::test::rank_env(r, world, port);
      env["COE_DIST_TEST_ROLE"] = scenario;
      env["COE_DIST_TEST_TIMEOUT"] = std::to_string(timeout_s);
      env["COE_DIST_TEST_DIR"] = dir_.string();
      env["OMP_NUM_THREADS"] = "1";
      if (adjust) adjust(r, env);
      procs.push_back(coe::test::spawn_process({"/proc/self/exe", "--gtest_filter=DistWorker.Run"}, env,
                                               dir_ / ("rank" + std::to_string(r) + ".log")));
    }
    coe::test::wait_all(procs, deadline_s, primary);
    return procs;
  }

  static std::string logs(const std::vector<coe::test::RankProcess>& procs) {
    std::string out;
    for (size_t i = 0; i < procs.size(); ++i)
      out += "---- process " + std::to_string(i) + " (exit " + std::to_string(procs[i].exit_code) + ", " +
             std::to_string(procs[i].seconds) + " s)\n" + procs[i].output();
    return out;
  }

  fs::path dir_;
};

TEST_F(DistContextTest, CollectivesAndGradientBuckets) {
  auto procs = launch("collectives", 2, 30, 120);
  for (const auto& p : procs) EXPECT_EQ(p.exit_code, 0) << logs(procs);
}

TEST_F(DistContextTest, GroupsAllToAllGatherAndReduceScatter) {
  auto procs = launch("groups", 4, 30, 120);
  for (const auto& p : procs) EXPECT_EQ(p.exit_code, 0) << logs(procs);
}

// A rank killed while another sends to it (Gloo's pair socket, the store's) must leave the sender
// an error naming it: with SIGPIPE's default action the send killed the sender too (exit 141, at
// random, in DistTrainKilled under load). A data-parallel context ignores SIGPIPE.
TEST_F(DistContextTest, ASendToADeadPeerIsAnErrorNotADeath) {
  auto procs = launch("sigpipe", 2, 30, 60);
  for (const auto& p : procs) EXPECT_EQ(p.exit_code, 0) << logs(procs);
}

// SIGKILL: the survivor's next collective sees the closed connection; the heartbeats name rank 1
// within seconds, far below the 30 s timeout.
TEST_F(DistContextTest, KilledRankIsNamedQuickly) {
  auto procs = launch("kill", 2, 30, 60);
  EXPECT_EQ(procs[1].exit_code, 128 + SIGKILL) << logs(procs);
  EXPECT_NE(procs[0].exit_code, 0) << logs(procs);
  EXPECT_FALSE(procs[0].timed_out) << logs(procs);
  EXPECT_LT(procs[0].seconds, 20.0) << logs(procs);
  const std::string out = procs[0].output();
  EXPECT_NE(out.find("rank 1 stopped answering (dead or hung: no heartbeat for"), std::string::npos) << out;
}

// A rank stuck outside any collective: the survivor's all-reduce times out after 4 s, the
// heartbeats show rank 1 alive but behind, and rank 1 is ended too (through the store's abort
// message) instead of sleeping on.
TEST_F(DistContextTest, HungRankTimesOutAndEveryoneExits) {
  auto procs = launch("hang", 2, 4, 60);
  for (const auto& p : procs) {
    EXPECT_NE(p.exit_code, 0) << logs(procs);
    EXPECT_FALSE(p.timed_out) << logs(procs);
    EXPECT_LT(p.seconds, 25.0) << logs(procs);
  }
  EXPECT_NE(procs[0].output().find("rank 1 is alive but did not reach collective"), std::string::npos) << logs(procs);
  EXPECT_NE(procs[1].output().find("rank 1 is alive but did not reach collective"), std::string::npos) << logs(procs);
}

// SIGSTOP: no closed socket and no heartbeat; the timeout ends the wait and names rank 1.
TEST_F(DistContextTest, StoppedRankIsNamedAfterTheTimeout) {
  auto procs = launch("stop", 2, 4, 40, {}, {}, /*primary=*/0);
  // Rank 1 stays stopped until rank 0 has exited and the launcher kills it.
  EXPECT_EQ(procs[0].exit_code == 2 || procs[0].exit_code == 1, true) << logs(procs);
  EXPECT_LT(procs[0].seconds, 25.0) << logs(procs);
  const std::string out = procs[0].output();
  EXPECT_NE(out.find("rank 1 did not answer within 4.0 s (dead or hung: no heartbeat for"), std::string::npos) << out;
}

// SIGSTOP on rank 0, which also serves the rendezvous store: the store stops answering, which is
// a hang, not a closed connection. Rank 1 names it within the timeout (plus a heartbeat), not
// after several timeouts, and not as a vanished store.
TEST_F(DistContextTest, StoppedMainRankIsNamedWithinTheTimeout) {
  auto procs = launch("stop-main", 2, 4, 40, {}, {}, /*primary=*/1);
  EXPECT_EQ(procs[1].exit_code == 2 || procs[1].exit_code == 1, true) << logs(procs);
  EXPECT_LT(procs[1].seconds, 4.0 + 8.0) << logs(procs);
  const std::string out = procs[1].output();
  EXPECT_NE(out.find("rank 0 did not answer within 4.0 s (hung: its rendezvous store is not responding)"),
            std::string::npos)
      << out;
}

TEST_F(DistContextTest, MissingRankAndMismatchedWorldSize) {
  {
    // Only rank 1 of 2: nobody serves the store.
    auto procs = launch("kill", 2, 3, 30, {}, {1});
    EXPECT_EQ(procs[0].exit_code, 2) << logs(procs);
    EXPECT_NE(procs[0].output().find("rank 1 cannot reach the rendezvous store at MASTER_ADDR:MASTER_PORT=127.0.0.1:"),
              std::string::npos)
        << logs(procs);
  }
  {
    // Rank 1 believes in 3 ranks.
    auto procs = launch("kill", 2, 3, 30, [](int r, std::map<std::string, std::string>& env) {
      if (r == 1) env["WORLD_SIZE"] = "3";
    });
    EXPECT_EQ(procs[1].exit_code, 2) << logs(procs);
    EXPECT_NE(procs[1].output().find("WORLD_SIZE=3 on rank 1 but rank 0 has 2"), std::string::npos) << logs(procs);
    EXPECT_EQ(procs[0].exit_code, 2) << logs(procs);
    EXPECT_NE(procs[0].output().find("only 1 of 2 ranks joined within 3.0 s (missing: rank 1)"), std::string::npos)
        << logs(procs);
  }
}

TEST(DistContextSingle, SingleProcessIsTheIdentity) {
  DistContext ctx;
  EXPECT_FALSE(ctx.distributed());
  EXPECT_EQ(ctx.rank(), 0);
  EXPECT_EQ(ctx.world_size(), 1);
  EXPECT_TRUE(ctx.is_main());
  EXPECT_EQ(ctx.backend(), "none");
  at::Tensor t = at::full({3}, 2.0f);
  ctx.all_reduce_sum(t);
  ctx.broadcast(t);
  ctx.barrier();
  EXPECT_TRUE(at::equal(t, at::full({3}, 2.0f)));
  EXPECT_EQ(ctx.all_reduce_sum(std::vector<int64_t>{4}), std::vector<int64_t>{4});
  EXPECT_EQ(ctx.broadcast_string("x", "s"), "x");
  bool ran = false;
  ctx.main_first("m", [&] { ran = true; });
  EXPECT_TRUE(ran);
  at::Tensor p = at::ones({2}).requires_grad_();
  coe::GradReducer reducer(ctx, {p});
  EXPECT_EQ(reducer.num_buckets(), 0);
  reducer.arm(true);
  (p * 3).sum().backward();
  reducer.finish();
  EXPECT_TRUE(at::equal(p.grad(), at::full({2}, 3.0f)));
  ctx.finish();
}

}  // namespace
