// Names of CUDA features the emulator does not run, declared so that using one is
// a compile error saying so (at the user's line), not g++'s "was not declared".
#pragma once

typedef unsigned long long cudaTextureObject_t;
typedef unsigned long long cudaSurfaceObject_t;

namespace cuconv_emu {
template <typename... T>
struct not_emulated : std::false_type {};
}  // namespace cuconv_emu

#define CUCONV_EMU_NOT_EMULATED(NAME, WHAT)                                                                  \
    template <typename R = float, typename... A>                                                             \
    R NAME(A...) {                                                                                           \
        static_assert(cuconv_emu::not_emulated<R, A...>::value,                                              \
                      "cuconv emulator: " #NAME "() is not emulated (" WHAT "); pass the data as an array "  \
                      "argument instead");                                                                   \
        return R();                                                                                          \
    }
CUCONV_EMU_NOT_EMULATED(tex1Dfetch, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex1D, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex2D, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex3D, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex1DLayered, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex2DLayered, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(texCubemap, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex2DLod, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(tex2Dgather, "texture objects and references")
CUCONV_EMU_NOT_EMULATED(surf1Dread, "surface objects")
CUCONV_EMU_NOT_EMULATED(surf2Dread, "surface objects")
CUCONV_EMU_NOT_EMULATED(surf3Dread, "surface objects")
CUCONV_EMU_NOT_EMULATED(surf1Dwrite, "surface objects")
CUCONV_EMU_NOT_EMULATED(surf2Dwrite, "surface objects")
CUCONV_EMU_NOT_EMULATED(surf3Dwrite, "surface objects")
#undef CUCONV_EMU_NOT_EMULATED
