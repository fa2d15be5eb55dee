// Generated from sparsecode/_rules.py by sparsecode.gpu._module.rules_header():
// do not edit.  Selection rules and per-signal status codes of the kernels.
#ifndef SPARSECODE_GPU_RULES_CUH
#define SPARSECODE_GPU_RULES_CUH
#define SC_ABS 0
#define SC_POSITIVE 1
#define SC_SIGNED 2
#define SC_RUNNING 0
#define SC_DONE 1
#define SC_DEPENDENT 2
#endif
