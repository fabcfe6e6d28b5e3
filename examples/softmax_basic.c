/* softmax_basic.c - the README example: softmax of two rows at T = 0.5. */
#include <math.h>
#include <softgate.h>
#include <stdio.h>

int main(void) {
    sg_context *ctx;
    if (sg_context_create(&ctx, 0) != SG_OK) return 1; /* 0: one thread per core */

    float logits[2][4] = {{1, 2, 3, 4}, {0, 0, -INFINITY, 5}};
    float probs[2][4];
    sg_softmax_options opt = sg_softmax_options_default();
    opt.temperature = 0.5f;

    if (sg_softmax_f32(ctx, 2, 4, &logits[0][0], 4, &probs[0][0], 4, &opt) != SG_OK) {
        fprintf(stderr, "softgate: %s\n", sg_context_error(ctx));
        return 1;
    }
    printf("%.4f %.4f %.4f %.4f\n", probs[0][0], probs[0][1], probs[0][2], probs[0][3]);
    sg_context_destroy(ctx);
    return 0;
}
