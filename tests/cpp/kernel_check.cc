// The kernels without Python: forward + backward of every mode and option (projection,
// clipping, both GRU variants, reverse, the regularisers' masks), with all, variable and
// masked positions (lengths 0, 1 and T), float32 and float64, on one and on two threads. Built with
// -DFUSEDRNN_BUILD_TESTS=ON; run under AddressSanitizer + UndefinedBehaviorSanitizer
// (-DFUSEDRNN_SANITIZE="address;undefined", LeakSanitizer on at exit) or valgrind, where it
// must finish with no report. It also checks what it computes, so that a sanitizer run that
// changed the numbers would not pass:
//   - a repeated call gives bit-identical outputs and gradients, and an inference forward
//     (no reserve: the kernels' own buffers) gives the training forward's outputs;
//   - skipped positions: y is 0 (lengths) or carries the previous output (masks), dx is 0;
//     the final state is the output of the last visited step (h0 for length 0; not checked
//     with zoneout, which keeps states apart from the output);
//   - clipping keeps cy inside [clip_min, clip_max] (without zoneout, which may keep c0);
//   - float64 gradients match central differences of the loss sum(dy*y) + sum(dhy*hy) +
//     sum(dcy*cy) on sampled coordinates of every input (cases without clipping);
//   - at a large hidden size, a call reserves address space in proportion to what it needs
//     (peak virtual memory), not to H times that.
// Exit status 0 when every check holds; otherwise the failures are printed and it is 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "fusedrnn/rnn.h"

using fusedrnn::Mode;
using fusedrnn::RnnDesc;

namespace {

int g_failures = 0;

void fail(const std::string& where, const std::string& what) {
  if (++g_failures <= 50) std::fprintf(stderr, "FAIL %s: %s\n", where.c_str(), what.c_str());
}

enum class Positions { kAll, kLengths, kMask };

struct Case {
  Mode mode;
  int64_t T, N, C, H, P;  // P = 0: no projection
  Positions positions;
  bool reverse = false;
  bool reset_after = true;
  bool clip = false;
  bool clip_nan = false;
  int threads = 1;
  bool hard_sigmoid = false;  // gate_activation
  bool masks = false;         // every regulariser of rnn.h's Masks at once
};

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kLstm: return "lstm";
    case Mode::kGru: return "gru";
    case Mode::kRnnTanh: return "rnn_tanh";
    default: return "rnn_relu";
  }
}

std::string describe(const Case& c, const char* dtype) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s T=%ld N=%ld C=%ld H=%ld P=%ld pos=%d reverse=%d reset_after=%d clip=%d "
                "clip_nan=%d threads=%d hard_sigmoid=%d masks=%d %s",
                mode_name(c.mode), long(c.T), long(c.N), long(c.C), long(c.H), long(c.P),
                int(c.positions), int(c.reverse), int(c.reset_after), int(c.clip),
                int(c.clip_nan), c.threads, int(c.hard_sigmoid), int(c.masks), dtype);
  return buf;
}

// Inputs, weights, upstream gradients and the valid positions of one case.
template <typename T>
struct Problem {
  RnnDesc desc;
  std::vector<int32_t> lengths, positions;  // positions: [N, T] (masks only)
  std::vector<T> x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, dy, dhy, dcy;
  // The masks (Case::masks), empty otherwise.
  std::vector<T> zoneout_h, zoneout_c, zoneout_y, state_mask, input_gate_masks,
      recurrent_gate_masks;
  // visited[t * N + n]: sample n runs at position t.
  std::vector<char> visited;

  fusedrnn::Masks<T> masks() const {
    const auto data = [](const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); };
    fusedrnn::Masks<T> m;
    m.zoneout_h = data(zoneout_h);
    m.zoneout_c = data(zoneout_c);
    m.zoneout_y = data(zoneout_y);
    m.state_mask = data(state_mask);
    m.input_gate_masks = data(input_gate_masks);
    m.recurrent_gate_masks = data(recurrent_gate_masks);
    return m;
  }

  fusedrnn::Valid valid() const {
    return fusedrnn::Valid(lengths.empty() ? nullptr : lengths.data(),
                           positions.empty() ? nullptr : positions.data(),
                           !positions.empty());
  }
  fusedrnn::Weights<T> weights() const {
    return {w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(),
            w_hr.empty() ? nullptr : w_hr.data()};
  }
};

template <typename T>
Problem<T> make_problem(const Case& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  Problem<T> p;
  RnnDesc& d = p.desc;
  d.mode = c.mode;
  d.steps = c.T;
  d.batch = c.N;
  d.input_size = c.C;
  d.hidden_size = c.H;
  d.proj_size = c.P;
  d.reverse = c.reverse;
  d.reset_after = c.reset_after;
  d.clip = c.clip;
  d.clip_min = -0.3;
  d.clip_max = 0.4;
  d.clip_nan = c.clip_nan;
  if (c.hard_sigmoid) d.gate_activation = fusedrnn::GateActivation::kHardSigmoid;
  // Larger weights with hard_sigmoid, so that gates reach its flat parts too.
  const double w_scale = c.hard_sigmoid ? 4.0 : 1.0;
  const int64_t G = fusedrnn::gate_count(c.mode), H = c.H, P = d.out_size();
  auto fill = [&](std::vector<T>& v, size_t n, double scale) {
    v.resize(n);
    for (auto& e : v) e = static_cast<T>(uni(rng) * scale);
  };
  fill(p.x, c.T * c.N * c.C, 1.0);
  fill(p.w_ih, G * H * c.C, w_scale / std::sqrt(double(c.C + 1)));
  fill(p.w_hh, G * H * P, w_scale / std::sqrt(double(P)));
  fill(p.b_ih, G * H, 0.3);
  fill(p.b_hh, G * H, 0.3);
  if (c.P > 0) fill(p.w_hr, P * H, 1.0 / std::sqrt(double(H)));
  fill(p.h0, c.N * P, 0.5);
  if (c.mode == Mode::kLstm) fill(p.c0, c.N * H, 0.5);
  fill(p.dy, c.T * c.N * P, 1.0);
  fill(p.dhy, c.N * P, 1.0);
  if (c.mode == Mode::kLstm) fill(p.dcy, c.N * H, 1.0);
  if (c.masks) {
    // Dropout masks as gluon and Keras draw them: 0 (a third of them) or 1 / (1 - 1/3).
    auto dropout = [&](std::vector<T>& v, size_t n) {
      v.resize(n);
      for (auto& e : v) e = rng() % 3 == 0 ? T(0) : T(1.5);
    };
    dropout(p.zoneout_h, c.T * c.N * P);
    if (c.mode == Mode::kLstm) dropout(p.zoneout_c, c.T * c.N * H);
    dropout(p.zoneout_y, c.T * c.N * P);
    dropout(p.state_mask, c.N * P);
    dropout(p.input_gate_masks, G * c.N * c.C);
    dropout(p.recurrent_gate_masks, G * c.N * P);
  }

  p.visited.assign(c.T * c.N, 0);
  if (c.positions == Positions::kAll) {
    std::fill(p.visited.begin(), p.visited.end(), 1);
    return p;
  }
  // Sample 0 runs all T steps, sample 1 none, sample 2 one, the rest a random number.
  p.lengths.resize(c.N);
  for (int64_t n = 0; n < c.N; ++n) {
    const int64_t len = n == 0 ? c.T : n == 1 ? 0 : n == 2 ? std::min<int64_t>(1, c.T)
                                                           : int64_t(rng() % (c.T + 1));
    p.lengths[n] = static_cast<int32_t>(len);
  }
  if (c.positions == Positions::kLengths) {
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t t = 0; t < p.lengths[n]; ++t) p.visited[t * c.N + n] = 1;
    return p;
  }
  // Masks: random subsets of positions (holes, pre- and post-padding alike).
  p.positions.assign(c.N * c.T, 0);
  for (int64_t n = 0; n < c.N; ++n) {
    std::vector<int32_t> all(c.T);
    for (int64_t t = 0; t < c.T; ++t) all[t] = static_cast<int32_t>(t);
    std::shuffle(all.begin(), all.end(), rng);
    std::sort(all.begin(), all.begin() + p.lengths[n]);
    for (int64_t s = 0; s < p.lengths[n]; ++s) {
      p.positions[n * c.T + s] = all[s];
      p.visited[all[s] * c.N + n] = 1;
    }
  }
  return p;
}

template <typename T>
struct Run {
  std::vector<T> y, hy, cy, reserve;
  std::vector<T> dx, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dh0, dc0;
};

template <typename T>
Run<T> run(const Problem<T>& p) {
  const RnnDesc& d = p.desc;
  const int64_t G = fusedrnn::gate_count(d.mode), H = d.hidden_size, P = d.out_size();
  const bool lstm = d.mode == Mode::kLstm;
  Run<T> r;
  r.y.assign(d.steps * d.batch * P, T(-7));  // overwritten everywhere, skipped positions too
  r.hy.assign(d.batch * P, T(-7));
  if (lstm) r.cy.assign(d.batch * H, T(-7));
  const fusedrnn::Masks<T> masks = p.masks();
  // (backward wants a non-null reserve)
  r.reserve.resize(std::max<size_t>(fusedrnn::reserve_size(d, masks.any()), 1));
  fusedrnn::forward<T>(d, p.valid(), p.x.data(), p.weights(), p.h0.data(),
                       lstm ? p.c0.data() : nullptr, r.y.data(), r.hy.data(),
                       lstm ? r.cy.data() : nullptr, r.reserve.data(), masks);
  r.dx.assign(p.x.size(), T(-7));
  r.dw_ih.assign(p.w_ih.size(), T(-7));
  r.dw_hh.assign(p.w_hh.size(), T(-7));
  r.db_ih.assign(G * H, T(-7));
  r.db_hh.assign(G * H, T(-7));
  r.dw_hr.assign(p.w_hr.size(), T(-7));
  r.dh0.assign(p.h0.size(), T(-7));
  r.dc0.assign(p.c0.size(), T(-7));
  fusedrnn::Grads<T> g;
  g.dx = r.dx.data();
  g.dw_ih = r.dw_ih.data();
  g.dw_hh = r.dw_hh.data();
  g.db_ih = r.db_ih.data();
  g.db_hh = r.db_hh.data();
  g.dw_hr = d.proj_size > 0 ? r.dw_hr.data() : nullptr;
  g.dh0 = r.dh0.data();
  g.dc0 = lstm ? r.dc0.data() : nullptr;
  fusedrnn::backward<T>(d, p.valid(), p.x.data(), p.weights(), p.h0.data(),
                        lstm ? p.c0.data() : nullptr, r.reserve.data(), p.dy.data(),
                        p.dhy.data(), lstm ? p.dcy.data() : nullptr, g, masks);
  return r;
}

template <typename T>
Run<T> infer(const Problem<T>& p) {
  const RnnDesc& d = p.desc;
  const bool lstm = d.mode == Mode::kLstm;
  Run<T> r;
  r.y.assign(d.steps * d.batch * d.out_size(), T(-7));
  r.hy.assign(d.batch * d.out_size(), T(-7));
  if (lstm) r.cy.assign(d.batch * d.hidden_size, T(-7));
  fusedrnn::forward<T>(d, p.valid(), p.x.data(), p.weights(), p.h0.data(),
                       lstm ? p.c0.data() : nullptr, r.y.data(), r.hy.data(),
                       lstm ? r.cy.data() : nullptr, nullptr, p.masks());
  return r;
}

// A virtual memory figure of this process in KiB ("VmSize", or the peak "VmPeak"), or -1
// where /proc does not tell.
long vm_kib(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  const std::string format = std::string(key) + ": %ld kB";
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, format.c_str(), &kib) == 1) break;
  std::fclose(f);
  return kib;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

template <typename T>
double loss(const Problem<T>& p) {
  const Run<T> r = [&] {
    const RnnDesc& d = p.desc;
    const bool lstm = d.mode == Mode::kLstm;
    Run<T> out;
    out.y.resize(d.steps * d.batch * d.out_size());
    out.hy.resize(d.batch * d.out_size());
    if (lstm) out.cy.resize(d.batch * d.hidden_size);
    fusedrnn::forward<T>(d, p.valid(), p.x.data(), p.weights(), p.h0.data(),
                         lstm ? p.c0.data() : nullptr, out.y.data(), out.hy.data(),
                         lstm ? out.cy.data() : nullptr, nullptr, p.masks());
    return out;
  }();
  double sum = 0;
  for (size_t i = 0; i < r.y.size(); ++i) sum += double(p.dy[i]) * r.y[i];
  for (size_t i = 0; i < r.hy.size(); ++i) sum += double(p.dhy[i]) * r.hy[i];
  for (size_t i = 0; i < r.cy.size(); ++i) sum += double(p.dcy[i]) * r.cy[i];
  return sum;
}

void check_gradients(const Case& c, Problem<double> p, const Run<double>& r,
                     const std::string& where) {
  std::mt19937 rng(99);
  struct Field {
    const char* name;
    std::vector<double>* value;
    const std::vector<double>* grad;
  };
  std::vector<Field> fields = {{"x", &p.x, &r.dx},         {"w_ih", &p.w_ih, &r.dw_ih},
                               {"w_hh", &p.w_hh, &r.dw_hh}, {"b_ih", &p.b_ih, &r.db_ih},
                               {"b_hh", &p.b_hh, &r.db_hh}, {"h0", &p.h0, &r.dh0}};
  if (c.mode == Mode::kLstm) fields.push_back({"c0", &p.c0, &r.dc0});
  if (c.P > 0) fields.push_back({"w_hr", &p.w_hr, &r.dw_hr});
  const double eps = 1e-6;
  for (const Field& f : fields) {
    if (f.value->empty()) continue;
    for (int i = 0; i < 3; ++i) {
      const size_t k = rng() % f.value->size();
      const double saved = (*f.value)[k];
      (*f.value)[k] = saved + eps;
      const double up = loss(p);
      (*f.value)[k] = saved - eps;
      const double down = loss(p);
      (*f.value)[k] = saved;
      const double numeric = (up - down) / (2 * eps), analytic = (*f.grad)[k];
      if (std::abs(numeric - analytic) > 1e-6 + 1e-5 * std::abs(numeric))
        fail(where, std::string("d") + f.name + "[" + std::to_string(k) + "] = " +
                        std::to_string(analytic) + ", finite differences " +
                        std::to_string(numeric));
    }
  }
}

template <typename T>
void check_case(const Case& c, unsigned seed) {
  const std::string where = describe(c, sizeof(T) == 4 ? "float32" : "float64");
  fusedrnn::set_num_threads(c.threads);
  const Problem<T> p = make_problem<T>(c, seed);
  const Run<T> r = run(p), again = run(p);
  const RnnDesc& d = p.desc;
  const int64_t N = d.batch, P = d.out_size(), H = d.hidden_size, C = d.input_size;

  for (auto [name, a, b] : {std::tuple{"y", &r.y, &again.y}, {"hy", &r.hy, &again.hy},
                            {"cy", &r.cy, &again.cy}, {"dx", &r.dx, &again.dx},
                            {"dw_ih", &r.dw_ih, &again.dw_ih}, {"dw_hh", &r.dw_hh, &again.dw_hh},
                            {"db_ih", &r.db_ih, &again.db_ih}, {"db_hh", &r.db_hh, &again.db_hh},
                            {"dw_hr", &r.dw_hr, &again.dw_hr}, {"dh0", &r.dh0, &again.dh0},
                            {"dc0", &r.dc0, &again.dc0}}) {
    if (!same_bits(*a, *b)) fail(where, std::string(name) + " differs on a repeated call");
  }
  const Run<T> inference = infer(p);
  for (auto [name, a, b] : {std::tuple{"y", &r.y, &inference.y}, {"hy", &r.hy, &inference.hy},
                            {"cy", &r.cy, &inference.cy}}) {
    if (!same_bits(*a, *b)) fail(where, std::string(name) + " of inference differs");
  }

  for (int64_t n = 0; n < N; ++n) {
    // The sample's positions in visiting order, and what y holds where it does not run.
    std::vector<int64_t> order;
    for (int64_t t = 0; t < d.steps; ++t)
      if (p.visited[t * N + n]) order.push_back(t);
    if (d.reverse) std::reverse(order.begin(), order.end());
    const bool carry = !p.positions.empty();
    const T* last = nullptr;  // the sample's latest output in visiting order
    for (int64_t s = 0, i = 0; s < d.steps; ++s) {
      const int64_t t = d.reverse ? d.steps - 1 - s : s;
      const T* yt = r.y.data() + (t * N + n) * P;
      if (i < int64_t(order.size()) && order[i] == t) {
        last = yt;
        ++i;
        continue;
      }
      for (int64_t q = 0; q < P; ++q) {
        const T expect = carry && last != nullptr ? last[q] : T(0);
        if (!(yt[q] == expect)) {
          fail(where, "y at skipped position t=" + std::to_string(t) + " n=" +
                          std::to_string(n) + " is not " + (carry ? "carried" : "0"));
          break;
        }
      }
      for (int64_t j = 0; j < C; ++j) {
        if (r.dx[(t * N + n) * C + j] != T(0)) {
          fail(where, "dx at skipped position t=" + std::to_string(t) + " is not 0");
          break;
        }
      }
    }
    const T* final_out = order.empty() ? p.h0.data() + n * P
                                       : r.y.data() + (order.back() * N + n) * P;
    if (!c.masks && !std::equal(final_out, final_out + P, r.hy.data() + n * P))
      fail(where, "hy[" + std::to_string(n) + "] is not the last visited output");
  }
  for (int64_t n = 0; d.clip && !c.masks && n < N; ++n) {
    const bool ran = std::any_of(p.visited.begin(), p.visited.end(), [&](const char& v) {
      return v && (&v - p.visited.data()) % N == n;
    });
    for (int64_t j = 0; ran && j < H; ++j) {
      const T v = r.cy[n * H + j];
      if (!(v >= T(d.clip_min) && v <= T(d.clip_max))) {
        fail(where, "cy[" + std::to_string(n) + "] outside [clip_min, clip_max]");
        break;
      }
    }
  }
  for (const auto* v : {&r.y, &r.hy, &r.cy, &r.dx, &r.dw_ih, &r.dw_hh, &r.db_ih, &r.dh0})
    for (T e : *v)
      if (!std::isfinite(e)) {
        fail(where, "non-finite value");
        break;
      }
  if constexpr (sizeof(T) == 8) {
    if (!d.clip) check_gradients(c, p, r, where);
  }
}

}  // namespace

int main() {
  std::vector<Case> cases;
  // Small odd sizes (one thread whatever the setting) and sizes whose steps are large
  // enough to be split across two threads (parallel.cc: threads_for).
  for (Positions pos : {Positions::kAll, Positions::kLengths, Positions::kMask}) {
    for (bool reverse : {false, true}) {
      for (int threads : {1, 2}) {
        cases.push_back({Mode::kLstm, 5, 4, 3, 7, 0, pos, reverse, true, false, false, threads});
        cases.push_back({Mode::kLstm, 5, 4, 3, 7, 3, pos, reverse, true, false, false, threads});
        cases.push_back({Mode::kLstm, 4, 5, 6, 9, 0, pos, reverse, true, true, false, threads});
        cases.push_back({Mode::kLstm, 4, 5, 6, 9, 4, pos, reverse, true, true, true, threads});
        cases.push_back({Mode::kGru, 5, 4, 3, 7, 0, pos, reverse, true, false, false, threads});
        cases.push_back({Mode::kGru, 5, 4, 3, 7, 0, pos, reverse, false, false, false, threads});
        cases.push_back({Mode::kRnnTanh, 5, 4, 3, 7, 0, pos, reverse, true, false, false,
                         threads});
        cases.push_back({Mode::kRnnRelu, 5, 4, 3, 7, 0, pos, reverse, true, false, false,
                         threads});
        // Two threads: batch * G * H * P >= 2^18 multiply-adds per step.
        cases.push_back({Mode::kLstm, 4, 17, 5, 67, 0, pos, reverse, true, false, false,
                         threads});
        cases.push_back({Mode::kLstm, 4, 17, 5, 67, 35, pos, reverse, true, true, false,
                         threads});
        cases.push_back({Mode::kGru, 4, 33, 5, 70, 0, pos, reverse, false, false, false,
                         threads});
        cases.push_back({Mode::kGru, 4, 33, 5, 70, 0, pos, reverse, true, false, false,
                         threads});
        cases.push_back({Mode::kRnnTanh, 3, 65, 4, 66, 0, pos, reverse, true, false, false,
                         threads});
        // One step (the cell path) and the boundary sizes.
        cases.push_back({Mode::kLstm, 1, 3, 2, 5, 0, pos, reverse, true, false, false, threads});
        cases.push_back({Mode::kGru, 1, 1, 1, 1, 0, pos, reverse, true, false, false, threads});
        // Keras' hard_sigmoid gates: small, projection with clipping, two threads, one step.
        for (bool reset_after : {true, false})
          cases.push_back({Mode::kGru, 5, 4, 3, 7, 0, pos, reverse, reset_after, false, false,
                           threads, true});
        cases.push_back({Mode::kLstm, 5, 4, 3, 7, 0, pos, reverse, true, false, false, threads,
                         true});
        cases.push_back({Mode::kLstm, 4, 5, 6, 9, 4, pos, reverse, true, true, false, threads,
                         true});
        cases.push_back({Mode::kLstm, 4, 17, 5, 67, 0, pos, reverse, true, false, false,
                         threads, true});
        cases.push_back({Mode::kGru, 4, 33, 5, 70, 0, pos, reverse, false, false, false,
                         threads, true});
        cases.push_back({Mode::kLstm, 1, 3, 2, 5, 0, pos, reverse, true, false, false, threads,
                         true});
      }
    }
  }
  // The regularised path (every mask at once) on each of them but the one-step ones.
  for (size_t i = 0, n = cases.size(); i < n; ++i) {
    if (cases[i].T < 2) continue;
    Case c = cases[i];
    c.masks = true;
    cases.push_back(c);
  }
  unsigned seed = 1;
  for (const Case& c : cases) {
    check_case<float>(c, seed);
    check_case<double>(c, seed);
    ++seed;
  }
  // Empty batch and zero steps.
  for (Mode m : {Mode::kLstm, Mode::kGru, Mode::kRnnTanh}) {
    check_case<float>({m, 0, 3, 2, 5, 0, Positions::kAll}, seed);
    check_case<float>({m, 3, 0, 2, 5, 0, Positions::kLengths}, seed);
  }
  // A large hidden size, on two threads: packed weights of ~G * H^2 elements (38 MB for the
  // LSTM here), and no more address space than a few times that (the peak also counts what
  // AddressSanitizer holds in quarantine). Sizes that counted the gate columns (G * H) where
  // the layout has G gates reserved H times the packed weights: 58 GB at H = 1536. The peak
  // cannot be reset, so the check takes VmPeak after less VmSize before (an upper bound).
  for (Mode m : {Mode::kLstm, Mode::kGru, Mode::kRnnTanh}) {
    const Case c{m, 3, 3, 8, 1536, 0, Positions::kLengths, false, true, false, false, 2};
    const long before = vm_kib("VmSize");
    try {
      check_case<float>(c, seed);
    } catch (const std::bad_alloc&) {
      fail(describe(c, "float32"), "out of memory");
    }
    const long grown = vm_kib("VmPeak") - before;
    if (before > 0 && grown > (long{1} << 20))
      fail(describe(c, "float32"), "virtual memory grew by " + std::to_string(grown >> 10) +
                                       " MiB");
  }
  // Bad arguments throw InvalidArgument (no crash, nothing leaked on the way out).
  {
    Problem<float> p = make_problem<float>({Mode::kLstm, 3, 2, 2, 4, 0, Positions::kLengths}, 7);
    p.lengths[1] = 4;
    bool threw = false;
    try {
      run(p);
    } catch (const fusedrnn::InvalidArgument&) {
      threw = true;
    }
    if (!threw) fail("bad lengths", "no InvalidArgument");
  }
  // A forked child runs the threaded cases on fusedrnn's own pool (parallel.cc), not on the
  // OpenMP team the parent used.
  const pid_t child = fork();
  if (child == 0) {
    for (const Case& c : cases)
      if (c.threads == 2 && c.N > 16) check_case<float>(c, 1);
    std::exit(g_failures == 0 ? 0 : 1);
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    fail("forked child", "failed (status " + std::to_string(status) + ")");
  std::printf("%zu cases x 2 dtypes, %d failures\n", cases.size(), g_failures);
  return g_failures == 0 ? 0 : 1;
}
