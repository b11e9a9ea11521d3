// <cooperative_groups.h> for the CPU emulator (also what <cooperative_groups/reduce.h>,
// scan.h and memcpy_async.h include): the groups of CUDA's cooperative groups API
// written over the emulator's barriers and warp collectives, with CUDA's semantics
// and, for reduce and scan, CUDA's order of operations (so float results round as
// on the GPU).
//
//   thread_block        this_thread_block(): sync = __syncthreads
//   thread_block_tile   tiled_partition<N>(parent), N = 1..32: a warp-level group of
//                       contiguous lanes; shfl*, any/all/ballot, match_*, meta_group_*
//   thread_group        the type-erased group (tiled_partition(parent, n) returns one)
//   coalesced_group     coalesced_threads(): the lanes of the warp that reach the call
//                       (see converge_arrive in cuconv_emu/runtime.h); ranks are packed
//   grid_group          this_grid(): sizes and ranks; sync() only for a grid of one
//                       block launched cooperatively (blocks run one at a time here),
//                       otherwise a KernelFault saying grid-wide sync is not emulated
//   cluster_group       this_cluster(): a launch without clusters has clusters of one
//                       block, which is what the emulator runs
//   reduce, inclusive_scan, exclusive_scan, plus/less/greater/bit_*, memcpy_async/wait,
//   labeled_partition, binary_partition, invoke_one(_broadcast)
//
// Not emulated: tiles of more than 32 threads (a compile error says so), grid-wide
// and multi-grid synchronisation of more than one block (a launch error).
#pragma once

namespace cooperative_groups {

namespace details {
enum : unsigned {
    coalesced_group_id = 1,
    grid_group_id = 2,
    thread_block_id = 3,
    multi_grid_group_id = 4,
    cluster_group_id = 5
};
template <typename T>
struct always_false : std::false_type {};

inline unsigned laneid() { return __emu_lane_id(); }
inline unsigned lanemask_lt() { return (1u << laneid()) - 1u; }
// The lane holding rank `rank` of a group of lanes `mask` (32 when there is none).
inline unsigned lane_of_rank(unsigned mask, unsigned rank) {
    for (unsigned l = 0; l < 32; ++l)
        if (mask >> l & 1u) {
            if (rank == 0) return l;
            --rank;
        }
    return 32;
}
// Bits of `lanes` (a lane mask) renumbered by rank within `mask`.
inline unsigned pack_lanes(unsigned mask, unsigned lanes) {
    unsigned out = 0, rank = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (mask >> l & 1u) {
            if (lanes >> l & 1u) out |= 1u << rank;
            ++rank;
        }
    return out;
}
inline unsigned long long block_threads() {
    return (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
}
inline unsigned block_rank_in_block() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline unsigned long long grid_blocks() { return (unsigned long long)gridDim.x * gridDim.y * gridDim.z; }
inline unsigned long long block_rank_in_grid() {
    return blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
}
inline void grid_sync(const char* what, const char* file, unsigned line) {
    if (!cuconv_emu::g_engine.cooperative)
        __emu_fault("%s at %s:%u in a kernel launched without a cooperative launch: launch it with "
                    "enable_cooperative_groups=True (on the GPU the grid group is invalid and sync() traps)",
                    what, file, line);
    if (grid_blocks() > 1)
        __emu_fault("%s at %s:%u: grid-wide synchronisation of more than one block is not emulated (the emulator "
                    "runs one block at a time; this grid has %u x %u x %u blocks)",
                    what, file, line, gridDim.x, gridDim.y, gridDim.z);
    __syncthreads(file, line);
}
}  // namespace details

// The type-erased group: what every group converts to, and what the dynamic
// tiled_partition(parent, n) returns. Warp-level groups keep their lanes' mask.
class thread_group {
  protected:
    unsigned type_;
    unsigned mask_ = 0;       // warp-level groups: their lanes in the warp
    unsigned size_ = 0;       // warp-level groups: their number of threads
    unsigned meta_rank_ = 0;  // rank of this group among its parent's partitions
    unsigned meta_size_ = 1;
    bool tiled_ = false;  // contiguous lanes of a tile (vs an arbitrary coalesced set)

    explicit thread_group(unsigned type) : type_(type) {}
    thread_group(unsigned type, unsigned mask, unsigned size, unsigned meta_rank, unsigned meta_size, bool tiled)
        : type_(type), mask_(mask), size_(size), meta_rank_(meta_rank), meta_size_(meta_size), tiled_(tiled) {}
    friend thread_group tiled_partition(const thread_group& parent, unsigned tilesz);

  public:
    unsigned get_type() const { return type_; }
    unsigned long long size() const {
        switch (type_) {
            case details::thread_block_id: return details::block_threads();
            case details::grid_group_id:
            case details::multi_grid_group_id: return details::block_threads() * details::grid_blocks();
            case details::cluster_group_id: return details::block_threads();
            default: return size_;
        }
    }
    unsigned long long num_threads() const { return size(); }
    unsigned long long thread_rank() const {
        switch (type_) {
            case details::thread_block_id:
            case details::cluster_group_id: return details::block_rank_in_block();
            case details::grid_group_id:
            case details::multi_grid_group_id:
                return details::block_rank_in_grid() * details::block_threads() + details::block_rank_in_block();
            default: return (unsigned)__builtin_popcount(mask_ & details::lanemask_lt());
        }
    }
    void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        switch (type_) {
            case details::thread_block_id:
            case details::cluster_group_id: __syncthreads(file, line); break;
            case details::grid_group_id: details::grid_sync("grid_group::sync()", file, line); break;
            case details::multi_grid_group_id:
                __emu_fault("multi_grid_group::sync() at %s:%u: multi-device synchronisation is not emulated", file,
                            line);
            default: __syncwarp(mask_, file, line);
        }
    }
};

// --- the block, the grid, the cluster ----------------------------------------------------------

class thread_block : public thread_group {
    friend thread_block this_thread_block();

  protected:
    thread_block() : thread_group(details::thread_block_id) {}

  public:
    static constexpr unsigned _group_id = details::thread_block_id;
    static void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
        __syncthreads(file, line);
    }
    static unsigned size() { return (unsigned)details::block_threads(); }
    static unsigned num_threads() { return size(); }
    static unsigned thread_rank() { return details::block_rank_in_block(); }
    static dim3 group_index() { return dim3(blockIdx.x, blockIdx.y, blockIdx.z); }
    static dim3 thread_index() { return dim3(threadIdx.x, threadIdx.y, threadIdx.z); }
    static dim3 group_dim() { return blockDim; }
    static dim3 dim_threads() { return blockDim; }
};

inline thread_block this_thread_block() { return thread_block(); }

// Scratch for tiles of more than 32 threads (which the emulator does not run).
template <unsigned MaxBlockSize = 1024>
struct block_tile_memory {};
template <unsigned MaxBlockSize>
inline thread_block this_thread_block(block_tile_memory<MaxBlockSize>&) { return this_thread_block(); }

class grid_group : public thread_group {
    friend grid_group this_grid();

  protected:
    grid_group() : thread_group(details::grid_group_id) {}

  public:
    static constexpr unsigned _group_id = details::grid_group_id;
    // On the GPU a grid group is valid only in a cooperative launch.
    static bool is_valid() { return cuconv_emu::g_engine.cooperative; }
    static void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
        details::grid_sync("grid_group::sync()", file, line);
    }
    static unsigned long long size() { return details::block_threads() * details::grid_blocks(); }
    static unsigned long long num_threads() { return size(); }
    static unsigned long long thread_rank() {
        return details::block_rank_in_grid() * details::block_threads() + details::block_rank_in_block();
    }
    static dim3 group_dim() { return gridDim; }
    static dim3 dim_blocks() { return gridDim; }
    static dim3 dim_threads() {
        return dim3(gridDim.x * blockDim.x, gridDim.y * blockDim.y, gridDim.z * blockDim.z);
    }
    static dim3 thread_index() {
        return dim3(blockIdx.x * blockDim.x + threadIdx.x, blockIdx.y * blockDim.y + threadIdx.y,
                    blockIdx.z * blockDim.z + threadIdx.z);
    }
    static unsigned long long num_blocks() { return details::grid_blocks(); }
    static dim3 block_index() { return dim3(blockIdx.x, blockIdx.y, blockIdx.z); }
    static unsigned long long block_rank() { return details::block_rank_in_grid(); }
    static dim3 dim_clusters() { return gridDim; }
    static unsigned long long num_clusters() { return details::grid_blocks(); }
    static dim3 cluster_index() { return block_index(); }
    static unsigned long long cluster_rank() { return block_rank(); }
};

inline grid_group this_grid() { return grid_group(); }

// Multi-device launches do not exist here: the group is never valid, its sync a launch error.
class multi_grid_group : public thread_group {
    friend multi_grid_group this_multi_grid();

  protected:
    multi_grid_group() : thread_group(details::multi_grid_group_id) {}

  public:
    static bool is_valid() { return false; }
    static void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
        __emu_fault("multi_grid_group::sync() at %s:%u: multi-device synchronisation is not emulated", file, line);
    }
    static unsigned long long size() { return details::block_threads() * details::grid_blocks(); }
    static unsigned long long num_threads() { return size(); }
    static unsigned long long thread_rank() { return grid_group::thread_rank(); }
    static unsigned grid_rank() { return 0; }
    static unsigned num_grids() { return 1; }
};

inline multi_grid_group this_multi_grid() { return multi_grid_group(); }

// A kernel launched without clusters has clusters of one block.
class cluster_group : public thread_group {
    friend cluster_group this_cluster();

  protected:
    cluster_group() : thread_group(details::cluster_group_id) {}

  public:
    static constexpr unsigned _group_id = details::cluster_group_id;
    static bool is_valid() { return true; }
    static void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
        __syncthreads(file, line);
    }
    static unsigned block_rank() { return 0; }
    static unsigned num_blocks() { return 1; }
    static dim3 block_index() { return dim3(0, 0, 0); }
    static dim3 dim_blocks() { return dim3(1, 1, 1); }
    static unsigned thread_rank() { return details::block_rank_in_block(); }
    static unsigned size() { return (unsigned)details::block_threads(); }
    static unsigned num_threads() { return size(); }
    static dim3 thread_index() { return dim3(threadIdx.x, threadIdx.y, threadIdx.z); }
    static dim3 dim_threads() { return blockDim; }
    static unsigned query_shared_rank(const void*) { return 0; }
    template <typename T>
    static T* map_shared_rank(T* addr, int rank, const char* file = __builtin_FILE(),
                              unsigned line = __builtin_LINE()) {
        if (rank != 0)
            __emu_fault("cluster_group::map_shared_rank(addr, %d) at %s:%u: the cluster has one block (clusters "
                        "and distributed shared memory are not emulated)", rank, file, line);
        return addr;
    }
};

inline cluster_group this_cluster() { return cluster_group(); }

// --- warp-level groups: coalesced groups and tiles ---------------------------------------------

namespace details {
// Shared by coalesced_group and thread_block_tile: collectives of the lanes in mask_.
class warp_group : public thread_group {
  protected:
    warp_group(unsigned mask, unsigned size, unsigned meta_rank, unsigned meta_size, bool tiled)
        : thread_group(coalesced_group_id, mask, size, meta_rank, meta_size, tiled) {}
    unsigned rank() const { return (unsigned)__builtin_popcount(mask_ & lanemask_lt()); }

  public:
    unsigned get_mask() const { return mask_; }
    unsigned meta_group_rank() const { return meta_rank_; }
    unsigned meta_group_size() const { return meta_size_; }
    void sync(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        __syncwarp(mask_, file, line);
    }
    int any(int pred, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return __any_sync(mask_, pred, file, line);
    }
    int all(int pred, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return __all_sync(mask_, pred, file, line);
    }
    // Bit i of the result is the group's rank i.
    unsigned ballot(int pred, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return pack_lanes(mask_, __ballot_sync(mask_, pred, file, line));
    }
    template <typename T>
    unsigned match_any(T value, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return pack_lanes(mask_, __match_any_sync(mask_, value, file, line));
    }
    template <typename T>
    unsigned match_all(T value, int& pred, const char* file = __builtin_FILE(),
                       unsigned line = __builtin_LINE()) const {
        return pack_lanes(mask_, __match_all_sync(mask_, value, &pred, file, line));
    }
    // Shuffles by rank within the group; a source rank outside it returns one's own value
    // (shfl wraps the rank modulo the group size, as a width-limited __shfl_sync does).
    template <typename T>
    T shfl(T var, int src_rank, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        unsigned n = size_ ? size_ : 1;
        unsigned src = lane_of_rank(mask_, (unsigned)src_rank % n);
        return __shfl_sync(mask_, var, src < 32 ? (int)src : (int)laneid(), 32, file, line);
    }
    template <typename T>
    T shfl_down(T var, unsigned delta, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        unsigned r = rank() + delta;
        unsigned src = r < size_ ? lane_of_rank(mask_, r) : laneid();
        return __shfl_sync(mask_, var, (int)src, 32, file, line);
    }
    template <typename T>
    T shfl_up(T var, unsigned delta, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        unsigned r = rank();
        unsigned src = delta <= r ? lane_of_rank(mask_, r - delta) : laneid();
        return __shfl_sync(mask_, var, (int)src, 32, file, line);
    }
};
}  // namespace details

class coalesced_group;
namespace details {
struct coalesced_access {
    static coalesced_group make(unsigned mask);
};
}  // namespace details

class coalesced_group : public details::warp_group {
    friend coalesced_group coalesced_threads(const char*, unsigned);
    friend coalesced_group tiled_partition(const coalesced_group& parent, unsigned tilesz);
    friend struct details::coalesced_access;
    friend thread_group tiled_partition(const thread_group& parent, unsigned tilesz);

  protected:
    explicit coalesced_group(unsigned mask, unsigned meta_rank = 0, unsigned meta_size = 1, bool tiled = false)
        : warp_group(mask, (unsigned)__builtin_popcount(mask), meta_rank, meta_size, tiled) {}

    coalesced_group tiles(unsigned tilesz, const char* file, unsigned line) const {
        if (tilesz == 0 || tilesz > 32 || (tilesz & (tilesz - 1)))
            __emu_fault("tiled_partition(group, %u) at %s:%u: the tile size must be a power of two up to 32", tilesz,
                        file, line);
        if (size_ <= tilesz) return *this;
        unsigned r = rank(), first = r / tilesz * tilesz, mask = 0, k = 0;
        for (unsigned l = 0; l < 32; ++l)
            if (mask_ >> l & 1u) {
                if (k >= first && k < first + tilesz) mask |= 1u << l;
                ++k;
            }
        unsigned meta = tiled_ ? size_ / tilesz : (size_ + tilesz - 1) / tilesz;
        return coalesced_group(mask, r / tilesz, meta, tiled_);
    }

  public:
    static constexpr unsigned _group_id = details::coalesced_group_id;
    unsigned size() const { return size_; }
    unsigned num_threads() const { return size_; }
    unsigned thread_rank() const { return rank(); }
};

inline coalesced_group details::coalesced_access::make(unsigned mask) { return coalesced_group(mask); }

inline coalesced_group coalesced_threads(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    return coalesced_group(cuconv_emu::converge_arrive("coalesced_threads()", file, line));
}

template <unsigned Size, typename ParentT = void>
class thread_block_tile;

namespace details {
template <unsigned Size>
constexpr unsigned tile_mask_of(unsigned lane) {
    return (Size >= 32 ? 0xffffffffu : ((1u << Size) - 1u)) << (lane & ~(Size - 1u) & 31u);
}
}  // namespace details

// A tile of Size contiguous threads (Size = 1, 2, 4, 8, 16 or 32).
template <unsigned Size, typename ParentT>
class thread_block_tile : public details::warp_group {
    static_assert(Size >= 1 && (Size & (Size - 1)) == 0,
                  "cuconv emulator: thread_block_tile<Size>: Size must be a power of two");
    static_assert(Size <= 32,
                  "cuconv emulator: thread_block_tile<Size> with Size > 32 (a multi-warp tile, which needs "
                  "block_tile_memory) is not emulated");
    template <unsigned, typename>
    friend class thread_block_tile;
    template <unsigned S, typename P>
    friend thread_block_tile<S, P> tiled_partition(const P& parent);
    friend thread_block_tile<1, void> this_thread();

  protected:
    explicit thread_block_tile(unsigned meta_rank = 0, unsigned meta_size = 1)
        : warp_group(details::tile_mask_of<Size>(details::laneid()), Size, meta_rank, meta_size, true) {}

  public:
    static constexpr unsigned _group_id = details::coalesced_group_id;
    static constexpr unsigned numThreads = Size;
    // A tile converts to the tile type that forgets its parent.
    template <typename P, typename Q = ParentT, typename = std::enable_if_t<std::is_void_v<Q>>>
    thread_block_tile(const thread_block_tile<Size, P>& t) : warp_group(t) {}

    static constexpr unsigned size() { return Size; }
    static constexpr unsigned num_threads() { return Size; }
    static unsigned thread_rank() { return details::laneid() & (Size - 1u); }
    // Shuffles as __shfl*_sync with width = Size (ranks are lanes within the tile).
    template <typename T>
    T shfl(T var, int src_rank, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return __shfl_sync(mask_, var, src_rank, (int)Size, file, line);
    }
    template <typename T>
    T shfl_down(T var, unsigned delta, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return __shfl_down_sync(mask_, var, delta, (int)Size, file, line);
    }
    template <typename T>
    T shfl_up(T var, unsigned delta, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) const {
        return __shfl_up_sync(mask_, var, delta, (int)Size, file, line);
    }
    template <typename T>
    T shfl_xor(T var, unsigned lane_mask, const char* file = __builtin_FILE(),
               unsigned line = __builtin_LINE()) const {
        return __shfl_xor_sync(mask_, var, (int)lane_mask, (int)Size, file, line);
    }
};

namespace details {
template <typename G>
struct is_tile : std::false_type {};
template <unsigned S, typename P>
struct is_tile<thread_block_tile<S, P>> : std::true_type {};

template <typename P>
struct parent_size {
    static unsigned size(const P& p) { return (unsigned)p.size(); }
    static unsigned rank(const P& p) { return (unsigned)p.thread_rank(); }
};
}  // namespace details

// tiled_partition<Size>(block or tile): rank r of the parent is in tile r / Size.
template <unsigned Size, typename ParentT>
thread_block_tile<Size, ParentT> tiled_partition(const ParentT& parent) {
    static_assert(std::is_base_of_v<thread_block, ParentT> || details::is_tile<ParentT>::value,
                  "cuconv emulator: tiled_partition<Size>(parent) takes a thread_block or a thread_block_tile "
                  "(as in CUDA)");
    unsigned n = details::parent_size<ParentT>::size(parent), r = details::parent_size<ParentT>::rank(parent);
    return thread_block_tile<Size, ParentT>(r / Size, (n + Size - 1) / Size);
}

inline thread_block_tile<1, void> this_thread() { return thread_block_tile<1, void>(0, 1); }

// The dynamic form: a type-erased tile (of a block, a tile or a coalesced group).
inline coalesced_group tiled_partition(const coalesced_group& parent, unsigned tilesz) {
    return parent.tiles(tilesz, __builtin_FILE(), __builtin_LINE());
}
inline thread_group tiled_partition(const thread_group& parent, unsigned tilesz) {
    if (tilesz == 0 || tilesz > 32 || (tilesz & (tilesz - 1)))
        __emu_fault("tiled_partition(group, %u): the emulator runs tiles whose size is a power of two up to 32 "
                    "(multi-warp tiles are not emulated)", tilesz);
    if (parent.get_type() == details::coalesced_group_id)
        return static_cast<const coalesced_group&>(parent).tiles(tilesz, __builtin_FILE(), __builtin_LINE());
    if (parent.get_type() != details::thread_block_id && parent.get_type() != details::cluster_group_id)
        __emu_fault("tiled_partition(group, %u): only a thread_block, a tile or a coalesced group can be "
                    "partitioned", tilesz);
    unsigned n = (unsigned)parent.size(), r = (unsigned)parent.thread_rank();
    unsigned mask = (tilesz >= 32 ? 0xffffffffu : ((1u << tilesz) - 1u)) << (details::laneid() & ~(tilesz - 1) & 31u);
    return thread_group(details::coalesced_group_id, mask, tilesz, r / tilesz, (n + tilesz - 1) / tilesz, true);
}

// labeled_partition / binary_partition: the lanes of the group with the same label.
template <typename G, typename L>
coalesced_group labeled_partition(const G& parent, L label, const char* file = __builtin_FILE(),
                                  unsigned line = __builtin_LINE()) {
    unsigned mask = parent.get_mask();
    return details::coalesced_access::make(__match_any_sync(mask, label, file, line));
}
template <typename G>
coalesced_group binary_partition(const G& parent, bool pred, const char* file = __builtin_FILE(),
                                 unsigned line = __builtin_LINE()) {
    return labeled_partition(parent, (int)pred, file, line);
}

// --- free functions -------------------------------------------------------------------------------

template <typename G>
void sync(const G& g, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    g.sync(file, line);
}
template <typename G>
auto thread_rank(const G& g) -> decltype(g.thread_rank()) {
    return g.thread_rank();
}
template <typename G>
auto group_size(const G& g) -> decltype(g.num_threads()) {
    return g.num_threads();
}

// --- reduce and scan (<cooperative_groups/reduce.h>, <cooperative_groups/scan.h>) -----------------

template <typename T>
struct plus {
    T operator()(T a, T b) const { return a + b; }
};
template <typename T>
struct less {  // the smaller value
    T operator()(T a, T b) const { return b < a ? b : a; }
};
template <typename T>
struct greater {  // the larger value
    T operator()(T a, T b) const { return a < b ? b : a; }
};
template <typename T>
struct bit_and {
    T operator()(T a, T b) const { return a & b; }
};
template <typename T>
struct bit_or {
    T operator()(T a, T b) const { return a | b; }
};
template <typename T>
struct bit_xor {
    T operator()(T a, T b) const { return a ^ b; }
};

namespace details {
// Hillis-Steele over ranks, as CUDA does: after step i each rank holds op(own, rank - i).
template <typename G, typename T, typename Op>
T inclusive_scan_ranks(const G& g, T value, Op&& op, const char* file, unsigned line) {
    T out = value;
    unsigned r = (unsigned)g.thread_rank(), n = (unsigned)g.size();
    for (unsigned i = 1; i < n; i <<= 1) {
        T tmp = g.shfl_up(out, i, file, line);
        if (i <= r) out = op(out, tmp);
    }
    return out;
}
}  // namespace details

// A tile reduces with a butterfly of shfl_xor (every lane gets the same bits); a
// partial coalesced group scans and takes its last rank's value, as CUDA does.
template <typename G, typename T, typename Op>
auto reduce(const G& g, T&& value, Op&& op, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE())
    -> std::decay_t<decltype(op(value, value))> {
    using R = std::decay_t<decltype(op(value, value))>;
    R out = value;
    if constexpr (details::is_tile<std::decay_t<G>>::value) {
        for (unsigned m = std::decay_t<G>::size() >> 1; m > 0; m >>= 1) out = op(out, g.shfl_xor(out, m, file, line));
    } else {
        static_assert(std::is_base_of_v<coalesced_group, std::decay_t<G>>,
                      "cuconv emulator: cooperative_groups::reduce takes a thread_block_tile or a coalesced_group");
        if (g.size() == 32) {
            for (unsigned m = 16; m > 0; m >>= 1) out = op(out, __shfl_xor_sync(0xffffffffu, out, (int)m, 32, file, line));
        } else {
            out = details::inclusive_scan_ranks(g, out, op, file, line);
            out = g.shfl(out, (int)g.size() - 1, file, line);
        }
    }
    return out;
}

template <typename G, typename T, typename Op>
auto inclusive_scan(const G& g, T&& value, Op&& op, const char* file = __builtin_FILE(),
                    unsigned line = __builtin_LINE()) -> std::decay_t<decltype(op(value, value))> {
    return details::inclusive_scan_ranks(g, std::decay_t<decltype(op(value, value))>(value), op, file, line);
}
template <typename G, typename T>
std::decay_t<T> inclusive_scan(const G& g, T&& value) {
    return inclusive_scan(g, value, plus<std::decay_t<T>>());
}

// Exclusive: rank 0 gets T{}; an integer sum subtracts, anything else shifts by one rank.
template <typename G, typename T, typename Op>
auto exclusive_scan(const G& g, T&& value, Op&& op, const char* file = __builtin_FILE(),
                    unsigned line = __builtin_LINE()) -> std::decay_t<decltype(op(value, value))> {
    using R = std::decay_t<decltype(op(value, value))>;
    R inc = details::inclusive_scan_ranks(g, R(value), op, file, line);
    if constexpr (std::is_integral_v<std::decay_t<T>> && std::is_same_v<std::decay_t<Op>, plus<std::decay_t<T>>>) {
        return inc - value;
    } else {
        R prev = g.shfl_up(inc, 1, file, line);
        return g.thread_rank() == 0 ? R{} : prev;
    }
}
template <typename G, typename T>
std::decay_t<T> exclusive_scan(const G& g, T&& value) {
    return exclusive_scan(g, value, plus<std::decay_t<T>>());
}

// invoke_one: one thread of the group calls fn; the _broadcast form gives every thread its result.
template <typename G, typename Fn, typename... Args>
void invoke_one(const G& g, Fn&& fn, Args&&... args) {
    if (g.thread_rank() == 0) fn(std::forward<Args>(args)...);
}
template <typename G, typename Fn, typename... Args>
auto invoke_one_broadcast(const G& g, Fn&& fn, Args&&... args) -> decltype(fn(std::forward<Args>(args)...)) {
    decltype(fn(std::forward<Args>(args)...)) r{};
    if (g.thread_rank() == 0) r = fn(std::forward<Args>(args)...);
    return g.shfl(r, 0);
}

// --- memcpy_async (<cooperative_groups/memcpy_async.h>) -----------------------------------------
// Each thread of the group copies its share at once; wait() is the group's barrier,
// after which every thread sees the whole copy (as after cg::wait on the GPU).

template <size_t N>
struct aligned_size_t {
    size_t value;
    constexpr explicit aligned_size_t(size_t v) : value(v) {}
    constexpr operator size_t() const { return value; }
};

template <typename G, typename Size>
void memcpy_async(const G& g, void* dst, const void* src, const Size& bytes) {
    size_t n = (size_t)bytes, parts = (size_t)g.size(), r = (size_t)g.thread_rank();
    size_t chunk = (n + parts - 1) / parts, lo = r * chunk, hi = lo + chunk < n ? lo + chunk : n;
    if (lo < hi) memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
}
template <typename G>
void wait(const G& g, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    g.sync(file, line);
}
template <unsigned N, typename G>
void wait_prior(const G& g, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    g.sync(file, line);
}

}  // namespace cooperative_groups
