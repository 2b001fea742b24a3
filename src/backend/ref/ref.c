/* placeholder until the reference kernels land */
#include "../backend.h"
const nbi_backend *nbi_backend_reference(void) { return nbi_backend_cpu(); }
