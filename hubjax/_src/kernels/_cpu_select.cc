// CPU selection kernels for hubjax, registered with XLA through JAX's FFI (jax.ffi).
//
// All kernels keep, per list, the K smallest (value, index) pairs seen so far, sorted by value
// then index, and insert new values in the order they are read. A value is compared once
// against the list's current K-th entry (16 at a time, with the widest vector instructions the
// CPU has), so the cost is about one read of each ranking value. The result is the K smallest
// of (initial list) U (new values) by (value, index): exactly what the portable XLA path
// (hubjax._select: two-stage group selection + merge) returns. Inputs must be NaN-free.
//
// * HubjaxSelectRows: d [..., B, W]; row b's values are d[b, :], the global index of column j is
//   seg_base[j / seg_width] + j % seg_width. Lists: init_v / init_i [..., B, K].
// * HubjaxSelectCols: d [..., R, W]; list o (o < H * seg_width) reads column
//   col_segs[o / seg_width] * seg_width + o % seg_width, and row r has global index
//   row_base + r. Lists: init_v / init_i [..., H * seg_width, K].
// * HubjaxSelectPairs: tiles d [..., P, B, C]; row r of tile t has global index
//   row_base[t] + r and column c col_base[t] + c. mode[t] = 1 merges the tile's rows into the
//   row lists rows_v / rows_i [..., P, B, K]; mode 2 also its columns into the column lists
//   cols_v / cols_i [..., P, C, K], in the same single read; mode 0 skips the tile.
// * HubjaxTiledLists / HubjaxQueryLists (AVX-512 only): the fused kernels. They compute the
//   ranking products themselves (8 x 32 at a time in registers, one fused multiply-add per
//   feature) and compare them with the lists' thresholds before they reach memory, so no
//   ranking tile is ever written: in-sample, every pair of points once, offered to both
//   points' lists (the diagonal blocks first, materialised a few rows at a time, to fill the
//   lists); query vs reference, each query block against all references. Their products round
//   differently from XLA's (another summation order, within the ranking's error bound), so
//   their lists can differ from the portable path's where rankings tie up to rounding; the
//   refined, certified neighbours and distances do not (tested).
// * HubjaxSortRows: the K smallest of each row of (values, index) [..., B, C], sorted (the
//   exact re-ranking's last step).
// * HubjaxPairSums: the exact re-ranking's per-pair sums, bitwise equal to the XLA path.
//
// Leading dimensions (vmap with broadcast_all) are independent problems. Work is split over
// XLA's intra-op thread pool (HUBJAX_THREADS caps the number of threads).
//
// The hot loops live in _cpu_select_kernels.inc, compiled once per instruction set (AVX-512,
// AVX2 and the baseline, with GCC on x86-64; the baseline alone elsewhere) and chosen at run
// time; all copies give the same result (they differ only in how many values one compare reads).
// On x86-64 a fourth copy, the AVX-512 one with its intrinsics emulated (_avx512_emulation.h),
// lets tests run the fused kernels on CPUs without AVX-512 (HUBJAX_ISA=avx512-emulated).

#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HUBJAX_MULTI_ISA 1
#else
#define HUBJAX_MULTI_ISA 0
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kChunk = 16;
constexpr int64_t kBufferFactor = 4;  // a BufferSink holds up to this many times k entries

struct Entry {
  float v;
  int32_t g;
};

struct EntryBefore {
  bool operator()(const Entry& x, const Entry& y) const {
    return x.v < y.v || (x.v == y.v && x.g < y.g);
  }
};

// Keeps the k best of e[0..n) in e[0..k) (unordered) and returns the k-th best.
__attribute__((noinline)) Entry CompactEntries(Entry* e, int64_t n, int64_t k) {
  std::nth_element(e, e + (k - 1), e + n, EntryBefore());
  // the k-th best is at k - 1 and everything before it is at least as good
  return e[k - 1];
}

// Puts the k best of e[0..n) (k <= n), sorted, in e[0..k): a selection and a sort of k, which is
// cheaper than std::partial_sort's heap when n is several times k.
void SortedHead(Entry* e, int64_t n, int64_t k) {
  if (k <= 0) return;
  if (n > k) std::nth_element(e, e + (k - 1), e + n, EntryBefore());
  std::sort(e, e + k, EntryBefore());
}

// Writes the k best of e[0..n), sorted, to (lv, li). With `sorted_head`, e[0..k) is still the
// sorted list the buffer started from: only the entries appended after it are sorted, then
// merged with it.
__attribute__((noinline)) void FinishEntries(Entry* e, int64_t n, int64_t k, bool sorted_head,
                                             float* lv, int32_t* li) {
  if (!sorted_head) {
    SortedHead(e, n, k);
    for (int64_t p = 0; p < k; ++p) {
      lv[p] = e[p].v;
      li[p] = e[p].g;
    }
    return;
  }
  std::sort(e + k, e + n, EntryBefore());
  int64_t a = 0, b = k;
  for (int64_t p = 0; p < k; ++p) {
    const Entry& x = (b < n && EntryBefore()(e[b], e[a])) ? e[b++] : e[a++];
    lv[p] = x.v;
    li[p] = x.g;
  }
}

struct RowsArgs {
  const float* dv;
  const int32_t* base;
  float* ov;
  int32_t* oi;
  int64_t rows, width, k, segs, seg_width;
};

struct ColsArgs {
  const float* dv;
  const int32_t* cs;
  const int32_t* rb;
  float* ov;
  int32_t* oi;
  int64_t rows, width, lists, k, segs, seg_width, batch;
};

struct PairSumsArgs {
  const float* x;
  const float* y;
  const int32_t* cols;
  float* out;
  int64_t b, d, m, c;
  bool product;
};

struct PairsArgs {
  const float* dv;
  const int32_t* row_base;
  const int32_t* col_base;
  const int32_t* mode;
  float* rv;
  int32_t* ri;
  float* cv;
  int32_t* ci;
  int64_t rows, cols, k;
};

// The fused kernels' micro-tile (AVX-512 only): kFusedRows broadcasts times two registers.
constexpr int64_t kFusedRows = 8;
constexpr int64_t kFusedCols = 32;

struct FusedArgs {
  const float* ap;  // the rows' operands, packed in panels of kFusedCols points
  const float* bp;  // the columns' operands, packed alike (the same array in-sample)
  float* lv;        // lists of the rows [n, stride]
  int32_t* li;
  float* thr;       // [n]: each list's last value
  int64_t n, kd, keep, stride;  // lists of keep entries, stride (a multiple of 16) apart
  float scale;  // 0: ap holds query operands; else ap = bp and queries are derived (in-sample)
};

}  // namespace

#if HUBJAX_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")
namespace hubjax_avx512 {
#define HUBJAX_ISA 512
#include "_cpu_select_kernels.inc"
#undef HUBJAX_ISA
}  // namespace hubjax_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
namespace hubjax_avx2 {
#define HUBJAX_ISA 256
#include "_cpu_select_kernels.inc"
#undef HUBJAX_ISA
}  // namespace hubjax_avx2
#pragma GCC pop_options
#endif

namespace hubjax_base {
#define HUBJAX_ISA 0
#include "_cpu_select_kernels.inc"
#undef HUBJAX_ISA
}  // namespace hubjax_base

#if HUBJAX_MULTI_ISA
// The AVX-512 copy again, for the baseline instruction set: its intrinsics emulated lane by
// lane (_avx512_emulation.h), so the fused kernels' logic runs, slowly, on any x86-64 CPU.
// Only for tests (HUBJAX_ISA=avx512-emulated); it must give the native copy's bits.
// Not optimised: at -O3 its loops of emulated vectors took minutes to compile (-O1: 10 s
// more than the rest of the file, -O0: 1 s), and it only runs tests' sizes.
// The last copy: the emulation's names for the intrinsics stay defined to the end of the
// file, where nothing else uses them.
#pragma GCC push_options
#pragma GCC optimize("O0")
#include "_avx512_emulation.h"
namespace hubjax_emulated {
#define HUBJAX_ISA 512
#include "_cpu_select_kernels.inc"
#undef HUBJAX_ISA
}  // namespace hubjax_emulated
#pragma GCC pop_options
#endif

namespace {

// The hot loops for the running CPU.
struct Kernels {
  void (*rows)(const RowsArgs&, int64_t, int64_t, Entry*);
  void (*cols)(const ColsArgs&, int64_t, int64_t, float*);
  void (*pairs)(const PairsArgs&, int64_t, int64_t, float*, Entry*);
  void (*sums)(const PairSumsArgs&, int64_t, int64_t, float*);
};

const Kernels& Pick() {
  static const Kernels kernels = [] {
#if HUBJAX_MULTI_ISA
    // "avx512", "avx2", "base" or "avx512-emulated": for tests
    const char* env = std::getenv("HUBJAX_ISA");
    const std::string want = env ? env : "";
    if (want == "avx512-emulated") {
      return Kernels{hubjax_emulated::RowsRange, hubjax_emulated::ColsRange,
                     hubjax_emulated::PairsRange, hubjax_emulated::PairSumsRange};
    }
    __builtin_cpu_init();
    if ((want.empty() || want == "avx512") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) {
      return Kernels{hubjax_avx512::RowsRange, hubjax_avx512::ColsRange,
                     hubjax_avx512::PairsRange, hubjax_avx512::PairSumsRange};
    }
    if ((want.empty() || want == "avx512" || want == "avx2") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2")) {
      return Kernels{hubjax_avx2::RowsRange, hubjax_avx2::ColsRange, hubjax_avx2::PairsRange,
                     hubjax_avx2::PairSumsRange};
    }
#endif
    return Kernels{hubjax_base::RowsRange, hubjax_base::ColsRange, hubjax_base::PairsRange,
                   hubjax_base::PairSumsRange};
  }();
  return kernels;
}

const char* IsaName() {
  const Kernels& k = Pick();
#if HUBJAX_MULTI_ISA
  if (k.pairs == hubjax_avx512::PairsRange) return "avx512";
  if (k.pairs == hubjax_emulated::PairsRange) return "avx512-emulated";
  if (k.pairs == hubjax_avx2::PairsRange) return "avx2";
#endif
  return k.pairs == hubjax_base::PairsRange ? "base" : "?";
}

// Threads for `work` values: the pool's (HUBJAX_THREADS caps it), fewer for small work.
int NumThreads(int64_t pool_threads, int64_t work) {
  static const int64_t configured = [] {
    const char* env = std::getenv("HUBJAX_THREADS");
    return env ? std::max(0, std::atoi(env)) : 0;
  }();
  int64_t n = std::max<int64_t>(1, pool_threads);
  if (configured > 0) n = std::min(n, configured);
  // below ~256k values per thread, handing work over costs more than it saves
  int64_t useful = std::max<int64_t>(1, work / (int64_t{1} << 18));
  return static_cast<int>(std::min(n, useful));
}

// Progress of one parallel loop, shared with the helper tasks (which may start after it ended).
struct LoopState {
  std::atomic<int64_t> next{0}, done{0};
};

// Runs fn(lo, hi) over [0, n) in chunks, on the calling thread and on XLA's intra-op thread
// pool (the pool XLA:CPU runs its own parallel work on: no extra threads competing with it).
// The caller claims chunks too and then waits only for chunks already claimed by running
// helpers, so the loop completes even when no pool thread is free; a helper that starts late
// finds nothing left and returns without touching fn.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int threads, int64_t chunks, const F& fn) {
  if (threads <= 1 || n <= 1) {
    fn(0, n);
    return;
  }
  chunks = std::max<int64_t>(1, std::min(n, chunks));
  const int64_t per = (n + chunks - 1) / chunks;
  auto state = std::make_shared<LoopState>();
  const F* body = &fn;
  auto work = [state, body, n, per, chunks] {
    for (int64_t c; (c = state->next.fetch_add(1)) < chunks;) {
      (*body)(c * per, std::min(n, (c + 1) * per));
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int t = 1; t < threads; ++t) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

int64_t Leading(ffi::AnyBuffer::Dimensions dims, int64_t trailing) {
  int64_t n = 1;
  for (size_t a = 0; a + trailing < dims.size(); ++a) n *= dims[a];
  return n;
}

ffi::Error SelectRowsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> d, ffi::Buffer<ffi::S32> seg_base,
                        ffi::Buffer<ffi::F32> init_v, ffi::Buffer<ffi::S32> init_i,
                        int64_t seg_width, ffi::ResultBuffer<ffi::F32> out_v,
                        ffi::ResultBuffer<ffi::S32> out_i) {
  auto dd = d.dimensions();
  auto id = init_v.dimensions();
  if (dd.size() < 2 || id.size() < 2 || seg_base.dimensions().size() < 1 || seg_width < 1) {
  return ffi::Error::InvalidArgument("hubjax select_rows: bad ranks");
  }
  const int64_t rows = dd[dd.size() - 2], width = dd[dd.size() - 1];
  const int64_t k = id[id.size() - 1];
  const int64_t segs = seg_base.dimensions().back();
  const int64_t batch = Leading(dd, 2);
  if (id[id.size() - 2] != rows || segs * seg_width < width || k < 1) {
  return ffi::Error::InvalidArgument("hubjax select_rows: inconsistent shapes");
  }
  const float* dv = d.typed_data();
  const int32_t* base = seg_base.typed_data();
  float* ov = out_v->typed_data();
  int32_t* oi = out_i->typed_data();
  std::copy(init_v.typed_data(), init_v.typed_data() + batch * rows * k, ov);
  std::copy(init_i.typed_data(), init_i.typed_data() + batch * rows * k, oi);

  const RowsArgs args{dv, base, ov, oi, rows, width, k, segs, seg_width};
  const int threads = NumThreads(pool.num_threads(), batch * rows * width);
  const auto rows_range = Pick().rows;
  ParallelFor(pool, batch * rows, threads, 4 * threads, [&args, rows_range](int64_t lo, int64_t hi) {
    std::vector<Entry> buffer(kBufferFactor * args.k);
    rows_range(args, lo, hi, buffer.data());
  });
  return ffi::Error::Success();
}

ffi::Error SelectColsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> d, ffi::Buffer<ffi::S32> col_segs,
                          ffi::Buffer<ffi::S32> row_base, ffi::Buffer<ffi::F32> init_v,
                          ffi::Buffer<ffi::S32> init_i, int64_t seg_width,
                          ffi::ResultBuffer<ffi::F32> out_v, ffi::ResultBuffer<ffi::S32> out_i) {
  auto dd = d.dimensions();
  auto id = init_v.dimensions();
  if (dd.size() < 2 || id.size() < 2 || col_segs.dimensions().size() < 1 || seg_width < 1) {
    return ffi::Error::InvalidArgument("hubjax select_cols: bad ranks");
  }
  const int64_t rows = dd[dd.size() - 2], width = dd[dd.size() - 1];
  const int64_t lists = id[id.size() - 2], k = id[id.size() - 1];
  const int64_t segs = col_segs.dimensions().back();
  const int64_t batch = Leading(dd, 2);
  if (lists != segs * seg_width || k < 1) {
    return ffi::Error::InvalidArgument("hubjax select_cols: inconsistent shapes");
  }
  const float* dv = d.typed_data();
  const int32_t* cs = col_segs.typed_data();
  const int32_t* rb = row_base.typed_data();
  float* ov = out_v->typed_data();
  int32_t* oi = out_i->typed_data();
  std::copy(init_v.typed_data(), init_v.typed_data() + batch * lists * k, ov);
  std::copy(init_i.typed_data(), init_i.typed_data() + batch * lists * k, oi);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < segs; ++s) {
      const int64_t c = cs[b * segs + s];
      if (c < 0 || (c + 1) * seg_width > width) {
        return ffi::Error::InvalidArgument("hubjax select_cols: segment out of range");
      }
    }
  }

  // Threads split the lists (columns); each scans all rows in order over its own columns.
  const ColsArgs args{dv, cs, rb, ov, oi, rows, width, lists, k, segs, seg_width, batch};
  const int threads = NumThreads(pool.num_threads(), batch * rows * width);
  const auto cols_range = Pick().cols;
  ParallelFor(pool, batch * lists, threads, 4 * threads,
              [&args, cols_range](int64_t lo, int64_t hi) {
                std::vector<float> thr(hi - lo);
                cols_range(args, lo, hi, thr.data());
              });
  return ffi::Error::Success();
}

ffi::Error SelectPairsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> d,
                           ffi::Buffer<ffi::S32> row_base, ffi::Buffer<ffi::S32> col_base,
                           ffi::Buffer<ffi::S32> mode, ffi::Buffer<ffi::F32> init_rv,
                           ffi::Buffer<ffi::S32> init_ri, ffi::Buffer<ffi::F32> init_cv,
                           ffi::Buffer<ffi::S32> init_ci, ffi::ResultBuffer<ffi::F32> out_rv,
                           ffi::ResultBuffer<ffi::S32> out_ri, ffi::ResultBuffer<ffi::F32> out_cv,
                           ffi::ResultBuffer<ffi::S32> out_ci) {
  auto dd = d.dimensions();
  auto rd = init_rv.dimensions();
  auto cd = init_cv.dimensions();
  if (dd.size() < 3 || rd.size() != dd.size() || cd.size() != dd.size()) {
    return ffi::Error::InvalidArgument("hubjax select_pairs: bad ranks");
  }
  const int64_t rows = dd[dd.size() - 2], cols = dd[dd.size() - 1];
  const int64_t k = rd[rd.size() - 1];
  const int64_t tiles = Leading(dd, 2);
  if (rd[rd.size() - 2] != rows || cd[cd.size() - 2] != cols || cd[cd.size() - 1] != k ||
      k < 1 || row_base.element_count() != static_cast<size_t>(tiles) ||
      col_base.element_count() != static_cast<size_t>(tiles) ||
      mode.element_count() != static_cast<size_t>(tiles)) {
    return ffi::Error::InvalidArgument("hubjax select_pairs: inconsistent shapes");
  }
  std::copy(init_rv.typed_data(), init_rv.typed_data() + tiles * rows * k, out_rv->typed_data());
  std::copy(init_ri.typed_data(), init_ri.typed_data() + tiles * rows * k, out_ri->typed_data());
  std::copy(init_cv.typed_data(), init_cv.typed_data() + tiles * cols * k, out_cv->typed_data());
  std::copy(init_ci.typed_data(), init_ci.typed_data() + tiles * cols * k, out_ci->typed_data());
  const PairsArgs args{d.typed_data(),        row_base.typed_data(), col_base.typed_data(),
                       mode.typed_data(),     out_rv->typed_data(),  out_ri->typed_data(),
                       out_cv->typed_data(),  out_ci->typed_data(),  rows,
                       cols,                  k};
  // Tiles are independent (their lists are distinct): one task per tile.
  const int threads = static_cast<int>(std::min<int64_t>(
      tiles, NumThreads(pool.num_threads(), tiles * (int64_t{1} << 18))));
  const auto pairs_range = Pick().pairs;
  ParallelFor(pool, tiles, threads, tiles, [&args, pairs_range](int64_t lo, int64_t hi) {
    std::vector<float> thr(args.cols);
    std::vector<Entry> buffer(kBufferFactor * args.k);
    pairs_range(args, lo, hi, thr.data(), buffer.data());
  });
  return ffi::Error::Success();
}

// The fused kernels' blocks: `requested` rounded up to a multiple of the panel width, or (0)
// about 600 KB of packed row panels (a block in L2 while a column panel sits in L1), but at
// least 20 panels (640 points): with long feature vectors the rows stream from L3 anyway, and
// fewer, larger tiles were faster (2-core AMD EPYC, 10k points, d = 512: 5 %, d = 1024: 12 %
// over 288 / 224-point blocks). The chosen size is then spread evenly over the blocks it
// needs, so the last block is not mostly padding: the packed points (m rounded up to whole
// blocks, d + 2 floats each) are as large as the input again on wide data (2 000 x 20 000:
// 20 panels a block padded 2 000 points to 2 560, even blocks of 16 panels to 2 048).
// hubjax._src.kernels.cpu sizes the scratch for them with this function (fused_block).
int64_t FusedBlock(int64_t m, int64_t kd, int64_t requested) {
  const int64_t panels = std::max<int64_t>(1, (m + kFusedCols - 1) / kFusedCols);
  if (requested > 0) {
    return std::min((requested + kFusedCols - 1) / kFusedCols, panels) * kFusedCols;
  }
  const int64_t units = std::min(
      panels, std::max<int64_t>(20, std::min<int64_t>(35, (600 << 10) / (kFusedCols * kd * 4))));
  const int64_t blocks = (panels + units - 1) / units;
  return (panels + blocks - 1) / blocks * kFusedCols;
}

bool FusedAvailable() {
#if HUBJAX_MULTI_ISA
  return Pick().pairs == hubjax_avx512::PairsRange || Pick().pairs == hubjax_emulated::PairsRange;
#else
  return false;
#endif
}

#if HUBJAX_MULTI_ISA
// The fused kernels' steps, from the AVX-512 copy or its emulation (whichever Pick chose).
struct FusedSteps {
  decltype(&hubjax_avx512::PackPanels) pack_panels;
  decltype(&hubjax_avx512::PackPoints) pack_points;
  decltype(&hubjax_avx512::SeedRows) seed_rows;
  decltype(&hubjax_avx512::FusedTile) tile;
};

const FusedSteps& PickFused() {
  static const FusedSteps native{hubjax_avx512::PackPanels, hubjax_avx512::PackPoints,
                                 hubjax_avx512::SeedRows, hubjax_avx512::FusedTile};
  static const FusedSteps emulated{hubjax_emulated::PackPanels, hubjax_emulated::PackPoints,
                                   hubjax_emulated::SeedRows, hubjax_emulated::FusedTile};
  return Pick().pairs == hubjax_emulated::PairsRange ? emulated : native;
}
#endif

// Tiles of the fused kernel handed to threads: block pairs in circle-method order (diagonals
// first), each taken by the first free thread whose two blocks no other thread holds (lists
// are then touched by one thread at a time). Any order gives the same lists.
struct TileQueue {
  std::mutex mu;
  std::vector<std::pair<int32_t, int32_t>> tiles;
  std::vector<char> taken, busy;
  int64_t first = 0;  // tiles before this one are all taken

  explicit TileQueue(int64_t nb) : busy(nb, 0) {
    for (int32_t b = 0; b < nb; ++b) tiles.emplace_back(b, b);
    const int32_t rounds = static_cast<int32_t>(nb % 2 ? nb : nb + 1);  // even: one bye per round
    for (int32_t r = 0; r < rounds; ++r) {
      for (int32_t i = 1; i <= (rounds - 1) / 2; ++i) {
        int32_t a = (r + i) % rounds, b = (r - i + rounds) % rounds;
        if (a >= nb || b >= nb) continue;
        tiles.emplace_back(std::min(a, b), std::max(a, b));
      }
    }
    taken.assign(tiles.size(), 0);
  }

  // The next tile whose blocks are free (marked busy), -1 when none is left, -2 to wait.
  int64_t Take() {
    std::lock_guard<std::mutex> lock(mu);
    while (first < static_cast<int64_t>(tiles.size()) && taken[first]) ++first;
    if (first == static_cast<int64_t>(tiles.size())) return -1;
    for (int64_t t = first; t < static_cast<int64_t>(tiles.size()); ++t) {
      const auto [a, b] = tiles[t];
      if (taken[t] || busy[a] || busy[b]) continue;
      taken[t] = 1;
      busy[a] = busy[b] = 1;
      return t;
    }
    return -2;
  }

  void Release(int64_t t) {
    std::lock_guard<std::mutex> lock(mu);
    busy[tiles[t].first] = busy[tiles[t].second] = 0;
  }
};

#if HUBJAX_MULTI_ISA
// Lists padded to whole registers (FusedArgs::stride entries apart), 64-byte aligned.
template <typename T>
using Aligned = std::unique_ptr<T[], decltype(&std::free)>;

template <typename T>
Aligned<T> AlignedArray(int64_t count) {
  const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
  return Aligned<T>(static_cast<T*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64))),
                    &std::free);
}

// The points of one problem of the fused kernels: reference operands [m, kd] (query vs
// reference), or prepared features [m, kd - 2] with an optional shift [kd - 2] and penalties [m]
// from which the kernel builds them (in-sample).
struct FusedPoints {
  const float* operands;
  const float* features;
  const float* shift;
  const float* penalty;
  float* sq;  // with features: each point's squared (shifted) norm is written here
};

// One problem of the fused kernels: n lists (query points q [n, kd]; with q null, the points
// themselves, in-sample, their queries derived with -scale) against m points r; the sorted
// lists of keep entries go to (out_v, out_i) [n, keep].
void FusedRun(ffi::ThreadPool& pool, const float* q, int64_t scale, const FusedPoints& r,
              int64_t n, int64_t m, int64_t kd, int64_t keep, int64_t requested_block,
              float* out_v, int32_t* out_i, float* scratch = nullptr) {
  const bool in_sample = q == nullptr;
  const int64_t block = FusedBlock(std::max(n, m), kd, requested_block);
  const int64_t nb = (n + block - 1) / block, mb = (m + block - 1) / block;
  const int64_t stride = (keep + 15) / 16 * 16;
  // in-sample: one packed copy serves as rows and columns
  // scratch (from XLA's buffers, in-sample), when given, holds the packed points
  std::vector<float> ap(in_sample ? 0 : nb * block * kd), own(scratch ? 0 : mb * block * kd),
      thr(n);
  float* const bp_data = scratch ? scratch : own.data();
  Aligned<float> lv = AlignedArray<float>(n * stride);
  Aligned<int32_t> li = AlignedArray<int32_t>(n * stride);
  for (int64_t o = 0; o < n; ++o) {
    for (int64_t p = 0; p < stride; ++p) {
      lv[o * stride + p] = __builtin_inff();
      li[o * stride + p] = static_cast<int32_t>(m + p);
    }
  }
  const int threads = NumThreads(pool.num_threads(), n * m * kd / 8);
  const int64_t rpan = in_sample ? 0 : nb * block / kFusedCols, cpan = mb * block / kFusedCols;
  ParallelFor(pool, rpan + cpan, threads, 4 * threads, [&](int64_t lo, int64_t hi) {
    if (lo < rpan) {
      PickFused().pack_panels(q, n, kd, kd - 2, lo, std::min(hi, rpan), ap.data());
    }
    if (hi > rpan && r.operands) {
      PickFused().pack_panels(r.operands, m, kd, kd - 1, std::max(lo, rpan) - rpan,
                              hi - rpan, bp_data);
    } else if (hi > rpan) {
      PickFused().pack_points(r.features, r.shift, r.penalty, m, kd - 2,
                              std::max(lo, rpan) - rpan, hi - rpan, bp_data, r.sq);
    }
  });
  const FusedArgs args{in_sample ? bp_data : ap.data(),
                       bp_data,
                       lv.get(),
                       li.get(),
                       thr.data(),
                       n,
                       kd,
                       keep,
                       stride,
                       in_sample ? static_cast<float>(scale) : 0.0f};
  if (in_sample) {
    TileQueue queue(nb);
    ParallelFor(pool, threads, threads, threads, [&](int64_t lo, int64_t hi) {
      std::vector<float> rowbuf(kFusedRows * block), tr(block), tc(block),
          tile(kFusedRows * kFusedCols), part(block * kFusedCols);
      std::vector<Entry> buffer(kBufferFactor * keep);
      for (int64_t w = lo; w < hi; ++w) {
        for (int64_t t; (t = queue.Take()) != -1;) {
          if (t == -2) {
            std::this_thread::yield();
            continue;
          }
          const auto [i, j] = queue.tiles[t];
          const int64_t ilo = i * block, jlo = j * block;
          const int64_t icount = std::min(block, n - ilo), jcount = std::min(block, n - jlo);
          if (i == j) {
            PickFused().seed_rows(args, ilo, icount, ilo, icount, rowbuf.data(),
                                  buffer.data());
          } else {
            PickFused().tile(args, ilo, icount, jlo, jcount, true, tr.data(), tc.data(),
                             tile.data(), part.data());
          }
          queue.Release(t);
        }
      }
    });
  } else {
    // blocks of query rows are independent: the first block of columns seeds their lists,
    // the others are fused (rows only)
    const int64_t seed = std::min(block, m);
    ParallelFor(pool, nb, threads, nb, [&](int64_t lo, int64_t hi) {
      std::vector<float> rowbuf(kFusedRows * block), tr(block),
          tc((mb * block - seed) + kFusedCols), tile(kFusedRows * kFusedCols),
          part(block * kFusedCols);
      std::vector<Entry> buffer(kBufferFactor * keep);
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t ilo = i * block, icount = std::min(block, n - ilo);
        PickFused().seed_rows(args, ilo, icount, 0, seed, rowbuf.data(), buffer.data());
        if (m > seed) {
          PickFused().tile(args, ilo, icount, seed, m - seed, false, tr.data(), tc.data(),
                           tile.data(), part.data());
        }
      }
    });
  }
  for (int64_t o = 0; o < n; ++o) {
    std::copy(lv.get() + o * stride, lv.get() + o * stride + keep, out_v + o * keep);
    std::copy(li.get() + o * stride, li.get() + o * stride + keep, out_i + o * keep);
  }
}
#endif

// HubjaxTiledLists: prepared points x [..., M, D], shift [..., D] (used when euclidean) and
// penalties [..., M] -> each point's K smallest rankings (value, index) over all M points,
// itself included, sorted ([..., M, K]). The kernel builds the reference operands of
// hubjax.distances.ranking_operands itself (features minus the shift for the Euclidean
// metrics, 1, squared norm plus penalty) and derives the queries (features times -scale, with
// scale = 2 for the Euclidean metrics, 1 otherwise). Every pair is computed once, in one
// orientation, and offered to both points' lists. Also returns each point's squared norm as
// used in its operands ([..., M]; the ranking error bound's norms, so XLA need not compute
// them in another pass over the points). Needs AVX-512.
ffi::Error TiledListsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> shift,
                          ffi::Buffer<ffi::F32> penalty, int64_t euclidean, int64_t block,
                          ffi::ResultBuffer<ffi::F32> out_v, ffi::ResultBuffer<ffi::S32> out_i,
                          ffi::ResultBuffer<ffi::F32> out_sq, ffi::ResultBuffer<ffi::F32> scratch) {
#if HUBJAX_MULTI_ISA
  if (!FusedAvailable()) {
    return ffi::Error::InvalidArgument("hubjax tiled_lists: needs AVX-512");
  }
  auto xd = x.dimensions();
  auto od = out_v->dimensions();
  if (xd.size() < 2 || od.size() != xd.size() || shift.dimensions().size() != xd.size() - 1 ||
      penalty.dimensions().size() != xd.size() - 1) {
    return ffi::Error::InvalidArgument("hubjax tiled_lists: bad ranks");
  }
  const int64_t m = xd[xd.size() - 2], d = xd[xd.size() - 1], keep = od[od.size() - 1];
  const int64_t batch = Leading(xd, 2);
  if (od[od.size() - 2] != m || Leading(od, 2) != batch || keep < 1 || m < 1 ||
      shift.element_count() != static_cast<size_t>(batch * d) ||
      penalty.element_count() != static_cast<size_t>(batch * m) ||
      out_sq->element_count() != static_cast<size_t>(batch * m) ||
      m + keep >= (int64_t{1} << 31)) {
    return ffi::Error::InvalidArgument("hubjax tiled_lists: inconsistent shapes");
  }
  // scratch [..., S]: room for the packed points of one problem (XLA's buffer, which it can
  // place where other buffers are dead; the size must cover the padding to whole blocks)
  const int64_t unit = FusedBlock(m, d + 2, block);
  const int64_t padded = (m + unit - 1) / unit * unit;
  const bool use_scratch =
      scratch->element_count() >= static_cast<size_t>(batch * padded * (d + 2));
  const int64_t per = static_cast<int64_t>(scratch->element_count()) / batch;
  for (int64_t b = 0; b < batch; ++b) {
    const FusedPoints points{nullptr, x.typed_data() + b * m * d,
                             euclidean ? shift.typed_data() + b * d : nullptr,
                             penalty.typed_data() + b * m, out_sq->typed_data() + b * m};
    FusedRun(pool, nullptr, euclidean ? 2 : 1, points, m, m, d + 2, keep, block,
             out_v->typed_data() + b * m * keep, out_i->typed_data() + b * m * keep,
             use_scratch ? scratch->typed_data() + b * per : nullptr);
  }
  return ffi::Error::Success();
#else
  (void)pool;
  (void)x;
  (void)shift;
  (void)penalty;
  (void)euclidean;
  (void)block;
  (void)out_v;
  (void)out_i;
  (void)out_sq;
  (void)scratch;
  return ffi::Error::InvalidArgument("hubjax tiled_lists: needs AVX-512");
#endif
}

// HubjaxQueryLists: query operands [..., N, D] and reference operands [..., M, D] (pair
// (i, j) ranks by query[i] . reference[j]) -> each query's K smallest rankings (value, index)
// over the M references, sorted ([..., N, K]). Needs AVX-512.
ffi::Error QueryListsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> query,
                          ffi::Buffer<ffi::F32> reference, int64_t block,
                          ffi::ResultBuffer<ffi::F32> out_v, ffi::ResultBuffer<ffi::S32> out_i) {
#if HUBJAX_MULTI_ISA
  if (!FusedAvailable()) {
    return ffi::Error::InvalidArgument("hubjax query_lists: needs AVX-512");
  }
  auto qd = query.dimensions();
  auto rd = reference.dimensions();
  auto od = out_v->dimensions();
  if (qd.size() < 2 || rd.size() != qd.size() || od.size() != qd.size()) {
    return ffi::Error::InvalidArgument("hubjax query_lists: bad ranks");
  }
  const int64_t n = qd[qd.size() - 2], kd = qd[qd.size() - 1], keep = od[od.size() - 1];
  const int64_t m = rd[rd.size() - 2];
  const int64_t batch = Leading(qd, 2);
  if (rd[rd.size() - 1] != kd || Leading(rd, 2) != batch || od[od.size() - 2] != n ||
      Leading(od, 2) != batch || keep < 1 || kd < 2 || n < 1 || m < 1 ||
      m + keep >= (int64_t{1} << 31)) {
    return ffi::Error::InvalidArgument("hubjax query_lists: inconsistent shapes");
  }
  for (int64_t b = 0; b < batch; ++b) {
    const FusedPoints points{reference.typed_data() + b * m * kd, nullptr, nullptr, nullptr,
                             nullptr};
    FusedRun(pool, query.typed_data() + b * n * kd, 0, points, n, m, kd, keep, block,
             out_v->typed_data() + b * n * keep,
             out_i->typed_data() + b * n * keep);
  }
  return ffi::Error::Success();
#else
  (void)pool;
  (void)query;
  (void)reference;
  (void)block;
  (void)out_v;
  (void)out_i;
  return ffi::Error::InvalidArgument("hubjax query_lists: needs AVX-512");
#endif
}

// Rows of sort_rows at most this long are sorted by insertion (InsertHead).
constexpr int64_t kInsertRowsMax = 256;

// The k smallest of (v, g)[0..c) by (value, index), sorted, into e[0..k), by insertion into a
// list of at most k: O(c + displacements). sort_rows mostly receives lists that are nearly
// sorted already (the exact re-ranking of candidates in ranking order: a few near-ties swap,
// the point itself moves to the end), where this is a few times faster than nth_element and
// sort (10k rows x 59 -> 50, knn at k = 50: 5.5 -> 1.7 ms). Same result: the order is strict
// (distinct indices).
void InsertHead(const float* v, const int32_t* g, int64_t c, int64_t k, Entry* e) {
  if (k <= 0) return;
  int64_t len = 0;
  for (int64_t j = 0; j < c; ++j) {
    const Entry x{v[j], g[j]};
    if (len == k && !EntryBefore()(x, e[k - 1])) continue;
    int64_t p = len < k ? len++ : k - 1;  // the slot freed at the end, then shift down
    for (; p > 0 && EntryBefore()(x, e[p - 1]); --p) e[p] = e[p - 1];
    e[p] = x;
  }
}

// HubjaxSortRows: values / index [..., B, C] -> the K smallest of each row by (value, index),
// sorted ([..., B, K], K from the results' shape).
ffi::Error SortRowsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> values,
                        ffi::Buffer<ffi::S32> index, ffi::ResultBuffer<ffi::F32> out_v,
                        ffi::ResultBuffer<ffi::S32> out_i) {
  auto vd = values.dimensions();
  auto od = out_v->dimensions();
  if (vd.size() < 1 || od.size() != vd.size() || index.dimensions().size() != vd.size()) {
    return ffi::Error::InvalidArgument("hubjax sort_rows: bad ranks");
  }
  const int64_t c = vd[vd.size() - 1], k = od[od.size() - 1];
  const int64_t rows = Leading(vd, 1);
  if (k < 0 || k > c || Leading(od, 1) != rows ||
      index.element_count() != values.element_count()) {
    return ffi::Error::InvalidArgument("hubjax sort_rows: inconsistent shapes");
  }
  const float* v = values.typed_data();
  const int32_t* g = index.typed_data();
  float* ov = out_v->typed_data();
  int32_t* oi = out_i->typed_data();
  const int threads = NumThreads(pool.num_threads(), rows * c * 8);
  ParallelFor(pool, rows, threads, 4 * threads, [=](int64_t lo, int64_t hi) {
    std::vector<Entry> e(c);
    for (int64_t r = lo; r < hi; ++r) {
      if (c <= kInsertRowsMax) {
        InsertHead(v + r * c, g + r * c, c, k, e.data());
      } else {
        for (int64_t j = 0; j < c; ++j) e[j] = Entry{v[r * c + j], g[r * c + j]};
        SortedHead(e.data(), c, k);
      }
      for (int64_t j = 0; j < k; ++j) {
        ov[r * k + j] = e[j].v;
        oi[r * k + j] = e[j].g;
      }
    }
  });
  return ffi::Error::Success();
}

// HubjaxPairSums: x [..., B, D], y [..., M, D], cols [..., B, C] -> out [..., B, C]: for each
// pair (b, y[cols[b, c]]) the sum over D of p = (x - y)^2 (product = 0) or x * y (product = 1),
// NaN products counted as 0, summed in hubjax.distances.tree_sum's fixed pairwise order (pad an
// odd length with one zero, add the second half to the first, repeat). Every operation is one
// IEEE float32 operation in the same order as the portable XLA path, so the sums are bitwise
// equal to it (built with -ffp-contract=off: no fused multiply-adds).
ffi::Error PairSumsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> y,
                        ffi::Buffer<ffi::S32> cols, int64_t product,
                        ffi::ResultBuffer<ffi::F32> out) {
  auto xd = x.dimensions();
  auto yd = y.dimensions();
  auto cd = cols.dimensions();
  if (xd.size() < 2 || yd.size() != xd.size() || cd.size() != xd.size()) {
    return ffi::Error::InvalidArgument("hubjax pair_sums: bad ranks");
  }
  const int64_t b = xd[xd.size() - 2], d = xd[xd.size() - 1];
  const int64_t m = yd[yd.size() - 2], c = cd[cd.size() - 1];
  const int64_t batch = Leading(xd, 2);
  if (yd[yd.size() - 1] != d || cd[cd.size() - 2] != b || Leading(yd, 2) != batch ||
      Leading(cd, 2) != batch) {
    return ffi::Error::InvalidArgument("hubjax pair_sums: inconsistent shapes");
  }
  const float* xv = x.typed_data();
  const float* yv = y.typed_data();
  const int32_t* cv = cols.typed_data();
  float* ov = out->typed_data();
  for (int64_t i = 0; i < batch * b * c; ++i) {
    if (cv[i] < 0 || cv[i] >= m) {
      return ffi::Error::InvalidArgument("hubjax pair_sums: column index out of range");
    }
  }
  const int threads = NumThreads(pool.num_threads(), batch * b * c * d);
  const auto sums_range = Pick().sums;
  const PairSumsArgs args{xv, yv, cv, ov, b, d, m, c, product != 0};
  ParallelFor(pool, batch * b, threads, 4 * threads, [&args, sums_range](int64_t lo, int64_t hi) {
    std::vector<float> t(args.d + 2);
    sums_range(args, lo, hi, t.data());
  });
  return ffi::Error::Success();
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSelectRows, SelectRowsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("seg_width")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSelectCols, SelectColsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("seg_width")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSelectPairs, SelectPairsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxTiledLists, TiledListsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("euclidean")
                                  .Attr<int64_t>("block")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxQueryLists, QueryListsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("block")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSortRows, SortRowsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxPairSums, PairSumsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("product")
                                  .Ret<ffi::Buffer<ffi::F32>>());

// A plain CPython module exposing the handlers as capsules for jax.ffi.register_ffi_target.
static PyObject* Capsules(PyObject*, PyObject*) {
  static const struct {
    const char* name;
    void* handler;
  } kTargets[] = {
      {"hubjax_select_rows", reinterpret_cast<void*>(HubjaxSelectRows)},
      {"hubjax_select_cols", reinterpret_cast<void*>(HubjaxSelectCols)},
      {"hubjax_select_pairs", reinterpret_cast<void*>(HubjaxSelectPairs)},
      {"hubjax_sort_rows", reinterpret_cast<void*>(HubjaxSortRows)},
      {"hubjax_tiled_lists", reinterpret_cast<void*>(HubjaxTiledLists)},
      {"hubjax_query_lists", reinterpret_cast<void*>(HubjaxQueryLists)},
      {"hubjax_pair_sums", reinterpret_cast<void*>(HubjaxPairSums)},
  };
  PyObject* dict = PyDict_New();
  if (!dict) return nullptr;
  for (const auto& target : kTargets) {
    PyObject* capsule = PyCapsule_New(target.handler, nullptr, nullptr);
    if (!capsule || PyDict_SetItemString(dict, target.name, capsule)) {
      Py_XDECREF(capsule);
      Py_DECREF(dict);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return dict;
}

#ifndef HUBJAX_BUILD_JAXLIB
#define HUBJAX_BUILD_JAXLIB "0"
#endif

static PyObject* BuildJaxlib(PyObject*, PyObject*) {
  return PyUnicode_FromString(HUBJAX_BUILD_JAXLIB);
}

static PyObject* Isa(PyObject*, PyObject*) { return PyUnicode_FromString(IsaName()); }

static PyObject* Fused(PyObject*, PyObject*) { return PyBool_FromLong(FusedAvailable()); }

static PyObject* FusedBlockPy(PyObject*, PyObject* args) {
  long long m, kd, requested;
  if (!PyArg_ParseTuple(args, "LLL", &m, &kd, &requested)) return nullptr;
  if (m < 1 || kd < 1) {
    PyErr_SetString(PyExc_ValueError, "fused_block: m and kd must be positive");
    return nullptr;
  }
  return PyLong_FromLongLong(FusedBlock(m, kd, requested));
}

static PyMethodDef kMethods[] = {
    {"isa", Isa, METH_NOARGS, "Instruction set of the kernels' hot loops on this CPU."},
    {"fused", Fused, METH_NOARGS, "Whether the fused in-sample kernel runs on this CPU."},
    {"fused_block", FusedBlockPy, METH_VARARGS,
     "fused_block(m, kd, requested): the points per block the fused kernels use."},
    {"capsules", Capsules, METH_NOARGS, "FFI handler capsules, by target name."},
    {"build_jaxlib", BuildJaxlib, METH_NOARGS, "Version of the jaxlib whose headers built this."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_select",
                              "hubjax's CPU selection kernels (XLA FFI handlers).", -1, kMethods};

PyMODINIT_FUNC PyInit__cpu_select(void) { return PyModule_Create(&kModule); }
