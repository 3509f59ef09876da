// CPU kernels of the GATv2 ops (gatv2_fwd, gatv2_bwd). Semantics: gat.h and pyunlearn/reference/gat.py.
// (being written)
#include "graph_attention/gat.h"
