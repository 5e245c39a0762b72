# cmake -DIN=kernel.cu -DOUT=kernel.cu.cpp -P cuda_emu_convert.cmake
#
# Turns a CUDA source into C++ for tools/cuda_emu (EMBER_CUDA=EMULATE): the two constructs of
# the device language that no header can define away are rewritten, everything else is left as
# written. A #line directive keeps __FILE__ and compiler messages on the original file.
#   kernel<<<grid, block, smem, stream>>>(args)
#     -> kernel ^ ::emu::cfg(__FILE__, __LINE__, grid, block, smem, stream) ^ ::emu::args(args)
#   extern __shared__ __align__(N) unsigned char name[];
#     -> unsigned char* name = ::emu::dynamic_shared();
file(READ "${IN}" text)
string(REPLACE "<<<" " ^ ::emu::cfg(__FILE__, __LINE__, " text "${text}")
string(REPLACE ">>>" ") ^ ::emu::args" text "${text}")
string(REGEX REPLACE "extern __shared__ (__align__\\([0-9]+\\) )?unsigned char ([A-Za-z_0-9]+)\\[\\];"
       "unsigned char* \\2 = ::emu::dynamic_shared();" text "${text}")
if(text MATCHES "extern __shared__")
  message(FATAL_ERROR "${IN}: tools/cuda_emu handles dynamic shared memory declared as "
                      "'extern __shared__ __align__(N) unsigned char name[];' only")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
