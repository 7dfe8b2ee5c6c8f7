// A portable stand-in for the AVX-512 intrinsics that _cpu_select_kernels.inc uses, so its
// AVX-512 copy (the fused kernels included) also compiles for the baseline instruction set
// and runs on any x86-64 CPU: HUBJAX_ISA=avx512-emulated selects it. It exists for tests: CI on
// a host without AVX-512 still runs the fused kernels' logic, and on a host with it the
// emulated copy must give the native one's bits (tests/test_cpu_kernel.py).
//
// Every function does, lane by lane, what Intel's documentation says the intrinsic does; the
// arithmetic is IEEE single precision, one rounding per operation, and _mm512_fmadd_ps is
// std::fma (one rounding, like the instruction). The file is built with -ffp-contract=off, so
// the compiler fuses no multiply-add of its own. Slow (a loop per vector operation): for tests.
//
// Included just before the emulated copy, the last code of _cpu_select.cc that names the
// intrinsics: its macros (below) then stay defined to the end of that file, unused.

#include <cmath>
#include <cstdint>
#include <cstring>

struct EmuPs {
  float v[16];
};
struct EmuSi {
  int32_t v[16];
};
using EmuMask = uint16_t;

#define HUBJAX_EMU static __attribute__((noinline))

HUBJAX_EMU EmuPs EmuLoadPs(const float* p) {
  EmuPs r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
HUBJAX_EMU EmuSi EmuLoadSi(const void* p) {
  EmuSi r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
HUBJAX_EMU void EmuStorePs(float* p, EmuPs a) { std::memcpy(p, a.v, sizeof a.v); }
HUBJAX_EMU void EmuStoreSi(void* p, EmuSi a) { std::memcpy(p, a.v, sizeof a.v); }
HUBJAX_EMU EmuPs EmuSet1Ps(float x) {
  EmuPs r;
  for (int i = 0; i < 16; ++i) r.v[i] = x;
  return r;
}
HUBJAX_EMU EmuSi EmuSet1Si(int32_t x) {
  EmuSi r;
  for (int i = 0; i < 16; ++i) r.v[i] = x;
  return r;
}
// _mm512_set_epi32 lists the lanes from the highest down
HUBJAX_EMU EmuSi EmuSetSi(int32_t e15, int32_t e14, int32_t e13, int32_t e12, int32_t e11,
                          int32_t e10, int32_t e9, int32_t e8, int32_t e7, int32_t e6, int32_t e5,
                          int32_t e4, int32_t e3, int32_t e2, int32_t e1, int32_t e0) {
  const int32_t lanes[16] = {e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15};
  return EmuLoadSi(lanes);
}
HUBJAX_EMU bool EmuOn(EmuMask k, int i) { return (k >> i) & 1u; }

// masked loads and stores touch only the lanes whose bit is set
HUBJAX_EMU EmuPs EmuMaskLoadPs(EmuPs src, EmuMask k, const float* p) {
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) src.v[i] = p[i];
  }
  return src;
}
HUBJAX_EMU EmuPs EmuMaskzLoadPs(EmuMask k, const float* p) {
  return EmuMaskLoadPs(EmuSet1Ps(0.0f), k, p);
}
HUBJAX_EMU EmuSi EmuMaskzLoadSi(EmuMask k, const void* p) {
  EmuSi r = EmuSet1Si(0);
  const int32_t* q = static_cast<const int32_t*>(p);
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) r.v[i] = q[i];
  }
  return r;
}
HUBJAX_EMU void EmuMaskStorePs(float* p, EmuMask k, EmuPs a) {
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) p[i] = a.v[i];
  }
}
HUBJAX_EMU void EmuMaskStoreSi(void* p, EmuMask k, EmuSi a) {
  int32_t* q = static_cast<int32_t*>(p);
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) q[i] = a.v[i];
  }
}

#define HUBJAX_EMU_LANEWISE(name, type, expr)    \
  HUBJAX_EMU type name(type a, type b) {         \
    type r;                                      \
    for (int i = 0; i < 16; ++i) r.v[i] = (expr); \
    return r;                                    \
  }
HUBJAX_EMU_LANEWISE(EmuAddPs, EmuPs, a.v[i] + b.v[i])
HUBJAX_EMU_LANEWISE(EmuSubPs, EmuPs, a.v[i] - b.v[i])
HUBJAX_EMU_LANEWISE(EmuMulPs, EmuPs, a.v[i] * b.v[i])
// MINPS / MAXPS: the second operand unless the comparison holds (so NaN gives the second)
HUBJAX_EMU_LANEWISE(EmuMinPs, EmuPs, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
HUBJAX_EMU_LANEWISE(EmuMaxPs, EmuPs, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
HUBJAX_EMU_LANEWISE(EmuAddSi, EmuSi,
                    static_cast<int32_t>(static_cast<uint32_t>(a.v[i]) +
                                         static_cast<uint32_t>(b.v[i])))
HUBJAX_EMU_LANEWISE(EmuAndSi, EmuSi, a.v[i] & b.v[i])
HUBJAX_EMU_LANEWISE(EmuMinSi, EmuSi, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
#undef HUBJAX_EMU_LANEWISE

HUBJAX_EMU EmuPs EmuFmaddPs(EmuPs a, EmuPs b, EmuPs c) {
  EmuPs r;
  for (int i = 0; i < 16; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
}
HUBJAX_EMU EmuPs EmuMaskzAddPs(EmuMask k, EmuPs a, EmuPs b) {
  EmuPs r;
  for (int i = 0; i < 16; ++i) r.v[i] = EmuOn(k, i) ? a.v[i] + b.v[i] : 0.0f;
  return r;
}
HUBJAX_EMU EmuSi EmuMaskAddSi(EmuSi src, EmuMask k, EmuSi a, EmuSi b) {
  const EmuSi sum = EmuAddSi(a, b);
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) src.v[i] = sum.v[i];
  }
  return src;
}
HUBJAX_EMU EmuPs EmuMaskMovPs(EmuPs src, EmuMask k, EmuPs a) {
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) src.v[i] = a.v[i];
  }
  return src;
}
HUBJAX_EMU EmuSi EmuMaskMovSi(EmuSi src, EmuMask k, EmuSi a) {
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) src.v[i] = a.v[i];
  }
  return src;
}

// the comparison predicates the kernels use (ordered, quiet; unordered for the NaN test)
enum EmuPredicate { kEmuEq = 0, kEmuLt = 1, kEmuLe = 2, kEmuUnord = 3 };
HUBJAX_EMU EmuMask EmuCmpPs(EmuPs a, EmuPs b, int pred) {
  EmuMask m = 0;
  for (int i = 0; i < 16; ++i) {
    const float x = a.v[i], y = b.v[i];
    bool hit;
    switch (pred) {
      case kEmuEq: hit = x == y; break;
      case kEmuLt: hit = x < y; break;
      case kEmuLe: hit = x <= y; break;
      default: hit = x != x || y != y; break;
    }
    m = static_cast<EmuMask>(m | (static_cast<unsigned>(hit) << i));
  }
  return m;
}
HUBJAX_EMU EmuMask EmuMaskCmpPs(EmuMask k, EmuPs a, EmuPs b, int pred) {
  return static_cast<EmuMask>(k & EmuCmpPs(a, b, pred));
}
#define HUBJAX_EMU_CMP_SI(name, op)                                          \
  HUBJAX_EMU EmuMask name(EmuSi a, EmuSi b) {                                \
    EmuMask m = 0;                                                           \
    for (int i = 0; i < 16; ++i)                                             \
      m = static_cast<EmuMask>(m | (static_cast<unsigned>(a.v[i] op b.v[i]) << i)); \
    return m;                                                                \
  }
HUBJAX_EMU_CMP_SI(EmuCmpltSi, <)
HUBJAX_EMU_CMP_SI(EmuCmpgtSi, >)
HUBJAX_EMU_CMP_SI(EmuCmpeqSi, ==)
#undef HUBJAX_EMU_CMP_SI

HUBJAX_EMU EmuSi EmuCastPsSi(EmuPs a) {
  EmuSi r;
  std::memcpy(r.v, a.v, sizeof r.v);
  return r;
}
HUBJAX_EMU EmuPs EmuCastSiPs(EmuSi a) {
  EmuPs r;
  std::memcpy(r.v, a.v, sizeof r.v);
  return r;
}
// lanes of the 32-lane concatenation hi:lo, from lane `shift` on
HUBJAX_EMU EmuSi EmuAlignrSi(EmuSi hi, EmuSi lo, int shift) {
  EmuSi r;
  for (int i = 0; i < 16; ++i) {
    const int j = i + (shift & 15);
    r.v[i] = j < 16 ? lo.v[j] : hi.v[j - 16];
  }
  return r;
}
HUBJAX_EMU EmuPs EmuPermutexvarPs(EmuSi idx, EmuPs a) {
  EmuPs r;
  for (int i = 0; i < 16; ++i) r.v[i] = a.v[idx.v[i] & 15];
  return r;
}
// the selected lanes packed to the bottom, zeros above (floats or integers)
template <typename V>
HUBJAX_EMU V EmuMaskzCompress(EmuMask k, V a) {
  V r{};
  int n = 0;
  for (int i = 0; i < 16; ++i) {
    if (EmuOn(k, i)) r.v[n++] = a.v[i];
  }
  return r;
}
#undef HUBJAX_EMU

// No forced unrolling of the kernels' loops (it made the emulated copy slow to compile).
#undef HUBJAX_UNROLL
#define HUBJAX_UNROLL(n)

// The intrinsics' names, for the copy of _cpu_select_kernels.inc that follows (a macro of the
// same name from <immintrin.h> is replaced).
#undef __m512
#define __m512 EmuPs
#undef __m512i
#define __m512i EmuSi
#undef __mmask16
#define __mmask16 EmuMask
#undef _CMP_EQ_OQ
#define _CMP_EQ_OQ kEmuEq
#undef _CMP_LT_OQ
#define _CMP_LT_OQ kEmuLt
#undef _CMP_LE_OQ
#define _CMP_LE_OQ kEmuLe
#undef _CMP_UNORD_Q
#define _CMP_UNORD_Q kEmuUnord
#undef _mm512_loadu_ps
#define _mm512_loadu_ps(p) EmuLoadPs(p)
#undef _mm512_loadu_si512
#define _mm512_loadu_si512(p) EmuLoadSi(p)
#undef _mm512_storeu_ps
#define _mm512_storeu_ps(p, a) EmuStorePs(p, a)
#undef _mm512_storeu_si512
#define _mm512_storeu_si512(p, a) EmuStoreSi(p, a)
#undef _mm512_store_si512
#define _mm512_store_si512(p, a) EmuStoreSi(p, a)
#undef _mm512_set1_ps
#define _mm512_set1_ps(x) EmuSet1Ps(x)
#undef _mm512_set1_epi32
#define _mm512_set1_epi32(x) EmuSet1Si(x)
#undef _mm512_set_epi32
#define _mm512_set_epi32 EmuSetSi
#undef _mm512_setzero_ps
#define _mm512_setzero_ps() EmuSet1Ps(0.0f)
#undef _mm512_setzero_si512
#define _mm512_setzero_si512() EmuSet1Si(0)
#undef _mm512_mask_loadu_ps
#define _mm512_mask_loadu_ps(src, k, p) EmuMaskLoadPs(src, k, p)
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps(k, p) EmuMaskzLoadPs(k, p)
#undef _mm512_maskz_loadu_epi32
#define _mm512_maskz_loadu_epi32(k, p) EmuMaskzLoadSi(k, p)
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(p, k, a) EmuMaskStorePs(p, k, a)
#undef _mm512_mask_storeu_epi32
#define _mm512_mask_storeu_epi32(p, k, a) EmuMaskStoreSi(p, k, a)
#undef _mm512_add_ps
#define _mm512_add_ps(a, b) EmuAddPs(a, b)
#undef _mm512_sub_ps
#define _mm512_sub_ps(a, b) EmuSubPs(a, b)
#undef _mm512_mul_ps
#define _mm512_mul_ps(a, b) EmuMulPs(a, b)
#undef _mm512_min_ps
#define _mm512_min_ps(a, b) EmuMinPs(a, b)
#undef _mm512_max_ps
#define _mm512_max_ps(a, b) EmuMaxPs(a, b)
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps(a, b, c) EmuFmaddPs(a, b, c)
#undef _mm512_maskz_add_ps
#define _mm512_maskz_add_ps(k, a, b) EmuMaskzAddPs(k, a, b)
#undef _mm512_add_epi32
#define _mm512_add_epi32(a, b) EmuAddSi(a, b)
#undef _mm512_and_si512
#define _mm512_and_si512(a, b) EmuAndSi(a, b)
#undef _mm512_min_epi32
#define _mm512_min_epi32(a, b) EmuMinSi(a, b)
#undef _mm512_mask_add_epi32
#define _mm512_mask_add_epi32(src, k, a, b) EmuMaskAddSi(src, k, a, b)
#undef _mm512_mask_mov_ps
#define _mm512_mask_mov_ps(src, k, a) EmuMaskMovPs(src, k, a)
#undef _mm512_mask_mov_epi32
#define _mm512_mask_mov_epi32(src, k, a) EmuMaskMovSi(src, k, a)
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask(a, b, pred) EmuCmpPs(a, b, pred)
#undef _mm512_mask_cmp_ps_mask
#define _mm512_mask_cmp_ps_mask(k, a, b, pred) EmuMaskCmpPs(k, a, b, pred)
#undef _mm512_cmplt_epi32_mask
#define _mm512_cmplt_epi32_mask(a, b) EmuCmpltSi(a, b)
#undef _mm512_cmpgt_epi32_mask
#define _mm512_cmpgt_epi32_mask(a, b) EmuCmpgtSi(a, b)
#undef _mm512_cmpeq_epi32_mask
#define _mm512_cmpeq_epi32_mask(a, b) EmuCmpeqSi(a, b)
#undef _mm512_castps_si512
#define _mm512_castps_si512(a) EmuCastPsSi(a)
#undef _mm512_castsi512_ps
#define _mm512_castsi512_ps(a) EmuCastSiPs(a)
#undef _mm512_alignr_epi32
#define _mm512_alignr_epi32(hi, lo, shift) EmuAlignrSi(hi, lo, shift)
#undef _mm512_permutexvar_ps
#define _mm512_permutexvar_ps(idx, a) EmuPermutexvarPs(idx, a)
#undef _mm512_maskz_compress_ps
#define _mm512_maskz_compress_ps(k, a) EmuMaskzCompress(k, a)
#undef _mm512_maskz_compress_epi32
#define _mm512_maskz_compress_epi32(k, a) EmuMaskzCompress(k, a)
#undef _mm512_cvtss_f32
#define _mm512_cvtss_f32(a) ((a).v[0])
#undef _mm_prefetch
#define _mm_prefetch(p, hint) __builtin_prefetch(p)
