// Emulator conformance program: warp shuffles (all four kinds, with widths,
// 4- and 8-byte values), votes, __activemask, __syncwarp, match, reduce, and
// collectives of disjoint lane groups inside divergent code. Blocks of 80
// threads leave a partial last warp of 16 lanes.

extern "C" __global__ void shuffles(const int* __restrict__ xi, const double* __restrict__ xd, int* out_i,
                                    double* out_d) {
    int t = threadIdx.x, lane = t & 31;
    int g = blockIdx.x * blockDim.x + t;
    int v = xi[g];
    float f = (float)v;
    int* o = out_i + g * 7;
    o[0] = __shfl_sync(0xffffffff, v, 3);
    o[1] = __shfl_sync(0xffffffff, v, 5, 8);
    o[2] = __shfl_up_sync(0xffffffff, v, 3, 16);
    o[3] = __shfl_down_sync(0xffffffff, v, 2, 16);
    o[4] = __shfl_xor_sync(0xffffffff, v, 5, 16);
    o[5] = (int)__shfl_xor_sync(0xffffffff, f, 1);
    o[6] = __shfl_sync(0xffffffff, v, lane + 17, 16);  // srcLane wraps modulo width
    out_d[g] = __shfl_down_sync(0xffffffff, xd[g], 1, 16);
}

extern "C" __global__ void votes(const int* __restrict__ pred, unsigned* out) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int p = pred[g];
    unsigned* o = out + g * 6;
    o[0] = __ballot_sync(0xffffffff, p);
    o[1] = __any_sync(0xffffffff, p);
    o[2] = __all_sync(0xffffffff, p);
    o[3] = __activemask();
    o[4] = __match_any_sync(0xffffffff, p & 3);
    o[5] = __reduce_add_sync(0xffffffff, (unsigned)p);
    __syncwarp();
}

// Warp-level sum with shfl_down: lane 0 of each warp writes its warp's sum.
extern "C" __global__ void warp_sum(const float* __restrict__ x, float* out) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[g];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffff, v, offset);
    if ((threadIdx.x & 31) == 0) out[g / 32] = v;
}

// Two half-warps shuffle at the same time with disjoint masks.
extern "C" __global__ void split_masks(const int* __restrict__ x, int* out) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31, v = x[g], r;
    if (lane < 16) {
        r = __shfl_sync(0x0000ffffu, v, 3);
        __syncwarp(0x0000ffffu);
    } else {
        r = __shfl_sync(0xffff0000u, v, 20) + __ballot_sync(0xffff0000u, v & 1);
    }
    out[g] = r;
}

// The generic warp collective the emulator provides for fallbacks of
// warp-wide hardware operations: lane 0..31 each contribute a value; the
// callback (run once) writes every lane the sum of all lanes' values times its
// own lane id. (And the other hooks: __emu_block_serial, __emu_fault.)
#ifdef CUCONV_EMULATOR
struct LaneData {
    int value;
    int result;
};
static void sum_times_lane(void** lanes, void*) {
    int total = 0;
    for (int l = 0; l < 32; ++l)
        if (lanes[l]) total += static_cast<LaneData*>(lanes[l])->value;
    for (int l = 0; l < 32; ++l)
        if (lanes[l]) static_cast<LaneData*>(lanes[l])->result = total * l;
}
#endif
extern "C" __global__ void collective(const int* __restrict__ x, int* out, unsigned long long* serials) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
#ifdef CUCONV_EMULATOR
    LaneData d{x[g], 0};
    __emu_warp_collective(&d, sum_times_lane, nullptr);
    out[g] = d.result;
    if (threadIdx.x == 0) serials[blockIdx.x] = __emu_block_serial();
    if (d.value == 12345) __emu_fault("lane %u of warp %u got the magic value", __emu_lane_id(), __emu_warp_id());
#else
    int v = x[g];
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffff, v, o);
    out[g] = v * (threadIdx.x & 31);
#endif
}
