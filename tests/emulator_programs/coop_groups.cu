// Emulator conformance program: cooperative groups in the styles of NVIDIA's CUDA
// samples — block and tile handles, cg::reduce and scans, tile shuffles and votes,
// coalesced groups in divergent code (aggregated atomics), dynamic partitions,
// grid-stride loops over this_grid(), memcpy_async into shared memory.
// tests/test_emulator_foreign.py compares every output with NumPy.
#include <cooperative_groups.h>
#include <cooperative_groups/memcpy_async.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>

namespace cg = cooperative_groups;

// The CUDA samples' reduction: warp sums with cg::reduce, then one warp adds them.
extern "C" __global__ void block_reduce(const float* __restrict__ x, float* __restrict__ out, int n) {
    __shared__ float warp_sums[32];
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    float v = 0.0f;
    for (int i = block.group_index().x * block.size() + block.thread_rank(); i < n; i += gridDim.x * block.size())
        v += x[i];
    v = cg::reduce(warp, v, cg::plus<float>());
    if (warp.thread_rank() == 0) warp_sums[warp.meta_group_rank()] = v;
    block.sync();
    if (warp.meta_group_rank() == 0) {
        v = warp.thread_rank() < warp.meta_group_size() ? warp_sums[warp.thread_rank()] : 0.0f;
        v = cg::reduce(warp, v, cg::plus<float>());
        if (block.thread_rank() == 0) out[block.group_index().x] = v;
    }
}

// Everything a tile of Size offers, per thread: 14 ints.
template <unsigned Size>
__global__ void tile_ops(const int* __restrict__ x, int* __restrict__ out) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<Size> tile = cg::tiled_partition<Size>(block);
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[g];
    int* o = out + g * 14;
    o[0] = tile.thread_rank();
    o[1] = tile.size();
    o[2] = tile.meta_group_rank();
    o[3] = tile.meta_group_size();
    o[4] = tile.shfl(v, 1);
    o[5] = tile.shfl_down(v, 1);
    o[6] = tile.shfl_up(v, 2);
    o[7] = tile.shfl_xor(v, Size / 2 ? Size / 2 : 0);
    o[8] = tile.any(v > 900);
    o[9] = tile.all(v > -500);
    o[10] = (int)tile.ballot(v & 1);
    o[11] = cg::reduce(tile, v, cg::greater<int>());
    o[12] = cg::reduce(tile, v, cg::less<int>());
    o[13] = (int)tile.match_any(v & 3);
    tile.sync();
    cg::sync(tile);
}

// Scans of a tile: inclusive and exclusive sums, a running maximum, and a float sum.
template <unsigned Size>
__global__ void tile_scans(const int* __restrict__ x, const float* __restrict__ xf, int* __restrict__ out,
                           float* __restrict__ outf) {
    auto tile = cg::tiled_partition<Size>(cg::this_thread_block());
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[g];
    out[g * 4 + 0] = cg::inclusive_scan(tile, v);
    out[g * 4 + 1] = cg::exclusive_scan(tile, v);
    out[g * 4 + 2] = cg::inclusive_scan(tile, v, cg::greater<int>());
    out[g * 4 + 3] = cg::exclusive_scan(tile, v, cg::greater<int>());
    outf[g] = cg::inclusive_scan(tile, xf[g], cg::plus<float>());
}

// The programming guide's aggregated atomic increment: inside a divergent branch,
// coalesced_threads() is the lanes that took it; one atomic per warp.
__device__ int atomic_agg_inc(int* counter) {
    cg::coalesced_group active = cg::coalesced_threads();
    int prev = 0;
    if (active.thread_rank() == 0) prev = atomicAdd(counter, (int)active.size());
    return active.shfl(prev, 0) + (int)active.thread_rank();
}

extern "C" __global__ void filter_positive(const float* __restrict__ x, float* __restrict__ kept, int* counter,
                                           int* info, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] > 0.0f) {
        int slot = atomic_agg_inc(counter);
        kept[slot] = x[i];
        cg::coalesced_group g = cg::coalesced_threads();
        info[i * 4 + 0] = (int)g.size();
        info[i * 4 + 1] = (int)g.thread_rank();
        info[i * 4 + 2] = (int)g.ballot(x[i] > 1.0f);
        info[i * 4 + 3] = cg::reduce(g, 1, cg::plus<int>());
    }
}

// The dynamic forms: tiled_partition(block, n) as a thread_group, and labeled partitions.
extern "C" __global__ void dynamic_tiles(const int* __restrict__ x, int* __restrict__ out) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_group tile8 = cg::tiled_partition(block, 8);
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    tile8.sync();
    cg::thread_block_tile<16> tile16 = cg::tiled_partition<16>(block);
    auto quad = cg::tiled_partition<4>(tile16);  // a tile of a tile
    cg::coalesced_group same = cg::labeled_partition(tile16, x[g] & 1);
    out[g * 7 + 0] = (int)tile8.thread_rank();
    out[g * 7 + 1] = (int)tile8.size();
    out[g * 7 + 2] = (int)quad.meta_group_rank();
    out[g * 7 + 3] = (int)same.size();
    out[g * 7 + 4] = (int)same.thread_rank();
    out[g * 7 + 5] = cg::reduce(same, x[g], cg::plus<int>());
    cg::thread_group erased = quad;
    out[g * 7 + 6] = (int)erased.thread_rank() + 10 * (int)erased.size();
}

// A grid-stride loop over this_grid() and a block-wide atomic, then the grid group's indices.
extern "C" __global__ void grid_stride(const double* __restrict__ x, double* sum, unsigned long long* info,
                                       long long n) {
    cg::grid_group grid = cg::this_grid();
    double v = 0.0;
    for (long long i = grid.thread_rank(); i < n; i += grid.size()) v += x[i];
    atomicAdd(sum, v);
    if (grid.thread_rank() == 0) {
        info[0] = grid.size();
        info[1] = grid.num_blocks();
        info[2] = grid.is_valid();
        info[3] = grid.dim_blocks().x;
    }
    if (grid.thread_rank() == grid.size() - 1) info[4] = grid.block_rank();
}

// Grid-wide sync: only a one-block grid under a cooperative launch runs.
extern "C" __global__ void grid_sync(int* data) {
    cg::grid_group grid = cg::this_grid();
    data[grid.thread_rank()] += 1;
    grid.sync();
    int right = data[(grid.thread_rank() + 1) % grid.size()];
    cg::sync(grid);
    data[grid.thread_rank()] += right;
}

// memcpy_async of a tile into shared memory, then a 3-point average of it.
extern "C" __global__ void staged_average(const float* __restrict__ x, float* __restrict__ out, int n) {
    __shared__ float tile[130];
    cg::thread_block block = cg::this_thread_block();
    int base = blockIdx.x * 128;
    int count = min(130, n - base);  // 128 plus a halo of 2 where the array has them
    cg::memcpy_async(block, tile, x + base, sizeof(float) * count);
    cg::wait(block);
    int i = base + block.thread_rank();
    if (block.thread_rank() < 128 && i + 2 < n) {
        int t = block.thread_rank();
        out[i] = (tile[t] + tile[t + 1] + tile[t + 2]) / 3.0f;
    }
}

// The CUDA samples' warpAggregatedAtomicsCG: per-bucket aggregated atomics, a labeled
// partition of the coalesced group in a divergent branch of a grid-stride loop.
__device__ int atomic_agg_inc_bucket(int bucket, int* counters) {
    cg::coalesced_group active = cg::coalesced_threads();
    auto same = cg::labeled_partition(active, bucket);
    int first = 0;
    if (same.thread_rank() == 0) first = atomicAdd(&counters[bucket], (int)same.size());
    return same.shfl(first, 0) + (int)same.thread_rank();
}

extern "C" __global__ void map_to_buckets(const int* __restrict__ bucket_of, int* slot, int* counters, int n,
                                          int buckets) {
    cg::grid_group grid = cg::this_grid();
    for (long long i = grid.thread_rank(); i < n; i += grid.size()) {
        int b = bucket_of[i];
        if (b < buckets) slot[i] = atomic_agg_inc_bucket(b, counters);
    }
}
