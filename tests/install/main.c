/* Built against an installed nabla (CMake package and pkg-config): d(x^2)/dx at 3 is 6. */
#include <nabla.h>
#include <stdio.h>

int main(void) {
    nb_scope_begin();
    nb_tensor *x = nb_scalar(NB_F64, 3.0);
    nb_set_requires_grad(x, true);
    int rc = nb_backward(nb_mul(x, x), NULL, 0);
    double g = rc == 0 ? nb_item(nb_grad(x)) : 0;
    nb_scope_end();
    printf("%g\n", g);
    return g == 6.0 ? 0 : 1;
}
