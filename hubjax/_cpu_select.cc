// CPU selection kernels for hubjax, registered with XLA through JAX's FFI (jax.ffi).
//
// Both kernels keep, per list, the K smallest (value, index) pairs seen so far, sorted by value
// then index, and insert new values in the order they are read. A value is compared once
// against the list's current K-th entry (in chunks of 16, which the compiler vectorises), so
// the cost is about one read of each ranking value. The result is the K smallest of
// (initial list) U (new values) by (value, index): exactly what the portable XLA path
// (hubjax._select: two-stage group selection + merge) returns. Inputs must be NaN-free.
//
// * HubjaxSelectRows: d [..., B, W]; row b's values are d[b, :], the global index of column j is
//   seg_base[j / seg_width] + j % seg_width. Lists: init_v / init_i [..., B, K].
// * HubjaxSelectCols: d [..., R, W]; list o (o < H * seg_width) reads column
//   col_segs[o / seg_width] * seg_width + o % seg_width, and row r has global index
//   row_base + r. Lists: init_v / init_i [..., H * seg_width, K].
//
// Leading dimensions (vmap with broadcast_all) are independent problems. Work is split over
// std::threads (HUBJAX_THREADS, default: the hardware's thread count).

#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kChunk = 16;

#define HUBJAX_INLINE static inline __attribute__((always_inline))
#define HUBJAX_MEMBER inline __attribute__((always_inline))

// Eight floats as one SIMD value (GCC/Clang vector extensions: SSE pairs on baseline x86-64,
// one AVX register in the avx2 clones below, NEON pairs on ARM).
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

HUBJAX_INLINE F8 Load8(const float* p) {
  F8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

HUBJAX_INLINE bool AnyNonZero(I8 m) {
  int32_t acc = 0;
  for (int i = 0; i < 8; ++i) acc |= m[i];
  return acc != 0;
}

// Whether any of the 16 values p[0..15] is <= t (one broadcast compare per 8 values).
HUBJAX_INLINE bool AnyAtMost(const float* p, float t) {
  const F8 tv = {t, t, t, t, t, t, t, t};
  return AnyNonZero((Load8(p) <= tv) | (Load8(p + 8) <= tv));
}

// Whether any p[c] <= t[c] for c < 16.
HUBJAX_INLINE bool AnyAtMostEach(const float* p, const float* t) {
  return AnyNonZero((Load8(p) <= Load8(t)) | (Load8(p + 8) <= Load8(t + 8)));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HUBJAX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HUBJAX_CLONES
#endif

HUBJAX_INLINE bool Before(float v, int32_t g, float tv, int32_t tg) {
  return v < tv || (v == tv && g < tg);
}

// Inserts (v, g) into the sorted list (lv, li) of length k, dropping its last entry.
// Precondition: Before(v, g, lv[k - 1], li[k - 1]).
HUBJAX_INLINE void Insert(float* lv, int32_t* li, int64_t k, float v, int32_t g) {
  int64_t p = k - 1;
  while (p > 0 && Before(v, g, lv[p - 1], li[p - 1])) {
    lv[p] = lv[p - 1];
    li[p] = li[p - 1];
    --p;
  }
  lv[p] = v;
  li[p] = g;
}

int NumThreads(int64_t work) {
  static const int configured = [] {
    const char* env = std::getenv("HUBJAX_THREADS");
    int n = env ? std::atoi(env) : 0;
    if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, n);
  }();
  // below ~256k values per thread, starting a thread costs more than it saves
  int64_t useful = std::max<int64_t>(1, work / (int64_t{1} << 18));
  return static_cast<int>(std::min<int64_t>(configured, useful));
}

template <typename F>
void ParallelFor(int64_t n, int threads, F&& fn) {
  if (threads <= 1 || n <= 1) {
    fn(0, n);
    return;
  }
  threads = static_cast<int>(std::min<int64_t>(threads, n));
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  int64_t per = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    int64_t lo = t * per, hi = std::min(n, lo + per);
    if (lo < hi) pool.emplace_back([&fn, lo, hi] { fn(lo, hi); });
  }
  fn(0, std::min(n, per));
  for (auto& th : pool) th.join();
}

int64_t Leading(ffi::AnyBuffer::Dimensions dims, int64_t trailing) {
  int64_t n = 1;
  for (size_t a = 0; a + trailing < dims.size(); ++a) n *= dims[a];
  return n;
}

struct RowsArgs {
  const float* dv;
  const int32_t* base;
  float* ov;
  int32_t* oi;
  int64_t rows, width, k, segs, seg_width;
};

// A sorted list of k entries, updated by insertion: cheapest for small k.
struct SortedSink {
  float* lv;
  int32_t* li;
  int64_t k;
  HUBJAX_MEMBER float Threshold() const { return lv[k - 1]; }
  HUBJAX_MEMBER void Offer(float v, int32_t g) {
    if (Before(v, g, lv[k - 1], li[k - 1])) Insert(lv, li, k, v, g);
  }
  void Finish() {}
};

struct Entry {
  float v;
  int32_t g;
};

inline bool EntryBefore(const Entry& x, const Entry& y) { return Before(x.v, x.g, y.v, y.g); }

// An unsorted buffer of up to 4k entries that all beat the k-th best of the last compaction;
// when it fills, nth_element keeps its k best. O(1) per accepted value: for large k.
struct BufferSink {
  std::vector<Entry>* e;
  float* lv;
  int32_t* li;
  int64_t k, n = 0;
  float tv;
  int32_t tg;
  BufferSink(std::vector<Entry>* buffer, float* lv_, int32_t* li_, int64_t k_)
      : e(buffer), lv(lv_), li(li_), k(k_) {
    e->resize(4 * k);
    for (int64_t p = 0; p < k; ++p) (*e)[p] = {lv[p], li[p]};
    n = k;
    tv = lv[k - 1];
    tg = li[k - 1];
  }
  HUBJAX_MEMBER float Threshold() const { return tv; }
  HUBJAX_MEMBER void Offer(float v, int32_t g) {
    if (!Before(v, g, tv, tg)) return;
    (*e)[n++] = {v, g};
    if (n == static_cast<int64_t>(e->size())) Compact();
  }
  void Compact() {
    std::nth_element(e->begin(), e->begin() + (k - 1), e->begin() + n, EntryBefore);
    n = k;
    tv = (*e)[k - 1].v;
    tg = (*e)[k - 1].g;
  }
  void Finish() {
    std::partial_sort(e->begin(), e->begin() + k, e->begin() + n, EntryBefore);
    for (int64_t p = 0; p < k; ++p) {
      lv[p] = (*e)[p].v;
      li[p] = (*e)[p].g;
    }
  }
};

template <typename Sink>
HUBJAX_INLINE void ScanRow(const float* row, const int32_t* bb, int64_t width, int64_t seg_width,
                           Sink& sink) {
  for (int64_t s = 0; s * seg_width < width; ++s) {
    const int64_t start = s * seg_width, stop = std::min(width, start + seg_width);
    const int32_t offset = bb[s] - static_cast<int32_t>(start);
    int64_t j = start;
    for (; j + kChunk <= stop; j += kChunk) {
      if (!AnyAtMost(row + j, sink.Threshold())) continue;
      for (int64_t c = 0; c < kChunk; ++c) {
        sink.Offer(row[j + c], static_cast<int32_t>(j + c) + offset);
      }
    }
    for (; j < stop; ++j) sink.Offer(row[j], static_cast<int32_t>(j) + offset);
  }
}

constexpr int64_t kBufferFromK = 24;  // lists at least this long use BufferSink

HUBJAX_CLONES void RowsRange(const RowsArgs& a, int64_t lo, int64_t hi) {
  const int64_t rows = a.rows, width = a.width, k = a.k;
  std::vector<Entry> buffer;
  for (int64_t br = lo; br < hi; ++br) {
    const float* row = a.dv + br * width;
    const int32_t* bb = a.base + (br / rows) * a.segs;
    float* lv = a.ov + br * k;
    int32_t* li = a.oi + br * k;
    if (k >= kBufferFromK) {
      BufferSink sink(&buffer, lv, li, k);
      ScanRow(row, bb, width, a.seg_width, sink);
      sink.Finish();
    } else {
      SortedSink sink{lv, li, k};
      ScanRow(row, bb, width, a.seg_width, sink);
    }
  }
}

struct ColsArgs {
  const float* dv;
  const int32_t* cs;
  const int32_t* rb;
  float* ov;
  int32_t* oi;
  int64_t rows, width, lists, k, segs, seg_width, batch;
};

HUBJAX_CLONES void ColsRange(const ColsArgs& a, int64_t lo, int64_t hi) {
  const float* dv = a.dv;
  const int32_t* cs = a.cs;
  const int32_t* rb = a.rb;
  float* ov = a.ov;
  int32_t* oi = a.oi;
  const int64_t rows = a.rows, width = a.width, lists = a.lists, k = a.k, segs = a.segs;
  const int64_t seg_width = a.seg_width, batch = a.batch;
  std::vector<float> thr;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t first = std::max(lo, b * lists), last = std::min(hi, (b + 1) * lists);
    if (first >= last) continue;
    const float* tile = dv + b * rows * width;
    float* bv = ov + b * lists * k;
    int32_t* bi = oi + b * lists * k;
    const int32_t base = rb[b];
    // the lists' current thresholds, contiguous for the vectorised compare
    thr.resize(last - first);
    for (int64_t o = first; o < last; ++o) thr[o - first] = bv[(o - b * lists) * k + k - 1];
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = tile + r * width;
      const int32_t g = base + static_cast<int32_t>(r);
      int64_t o = first;
      while (o < last) {
        const int64_t local = o - b * lists;
        const int64_t s = local / seg_width;
        const int64_t seg_stop = std::min(last, b * lists + (s + 1) * seg_width);
        const float* src = row + cs[b * segs + s] * seg_width - s * seg_width - b * lists;
        // src[o] is the value read by list o
        int64_t q = o;
        for (; q + kChunk <= seg_stop; q += kChunk) {
          if (!AnyAtMostEach(src + q, thr.data() + (q - first))) continue;
          for (int64_t c = 0; c < kChunk; ++c) {
            const float v = src[q + c];
            float* lv = bv + (q + c - b * lists) * k;
            int32_t* li = bi + (q + c - b * lists) * k;
            if (Before(v, g, lv[k - 1], li[k - 1])) {
              Insert(lv, li, k, v, g);
              thr[q + c - first] = lv[k - 1];
            }
          }
        }
        for (; q < seg_stop; ++q) {
          const float v = src[q];
          float* lv = bv + (q - b * lists) * k;
          int32_t* li = bi + (q - b * lists) * k;
          if (Before(v, g, lv[k - 1], li[k - 1])) {
            Insert(lv, li, k, v, g);
            thr[q - first] = lv[k - 1];
          }
        }
        o = seg_stop;
      }
    }
  }
  }

ffi::Error SelectRowsImpl(ffi::Buffer<ffi::F32> d, ffi::Buffer<ffi::S32> seg_base,
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
  ParallelFor(batch * rows, NumThreads(batch * rows * width),
            [&args](int64_t lo, int64_t hi) { RowsRange(args, lo, hi); });
  return ffi::Error::Success();
}

ffi::Error SelectColsImpl(ffi::Buffer<ffi::F32> d, ffi::Buffer<ffi::S32> col_segs,
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
  ParallelFor(batch * lists, NumThreads(batch * rows * width),
              [&args](int64_t lo, int64_t hi) { ColsRange(args, lo, hi); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSelectRows, SelectRowsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("seg_width")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HubjaxSelectCols, SelectColsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("seg_width")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

// A plain CPython module exposing the two handlers as capsules for jax.ffi.register_ffi_target.
static PyObject* Capsules(PyObject*, PyObject*) {
  PyObject* dict = PyDict_New();
  if (!dict) return nullptr;
  PyObject* rows = PyCapsule_New(reinterpret_cast<void*>(HubjaxSelectRows), nullptr, nullptr);
  PyObject* cols = PyCapsule_New(reinterpret_cast<void*>(HubjaxSelectCols), nullptr, nullptr);
  if (!rows || !cols || PyDict_SetItemString(dict, "hubjax_select_rows", rows) ||
      PyDict_SetItemString(dict, "hubjax_select_cols", cols)) {
    Py_XDECREF(rows);
    Py_XDECREF(cols);
    Py_DECREF(dict);
    return nullptr;
  }
  Py_DECREF(rows);
  Py_DECREF(cols);
  return dict;
}

#ifndef HUBJAX_BUILD_JAXLIB
#define HUBJAX_BUILD_JAXLIB "0"
#endif

static PyObject* BuildJaxlib(PyObject*, PyObject*) {
  return PyUnicode_FromString(HUBJAX_BUILD_JAXLIB);
}

static PyMethodDef kMethods[] = {
    {"capsules", Capsules, METH_NOARGS, "FFI handler capsules, by target name."},
    {"build_jaxlib", BuildJaxlib, METH_NOARGS, "Version of the jaxlib whose headers built this."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_select",
                              "hubjax's CPU selection kernels (XLA FFI handlers).", -1, kMethods};

PyMODINIT_FUNC PyInit__cpu_select(void) { return PyModule_Create(&kModule); }
