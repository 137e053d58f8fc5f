/* Minimise f(p) = sum of (p - 1)^2 with ADOPT through the C ABI (README, "Use from C / Python"). */
#include <stdio.h>

#include "adopt.h"

int main(void) {
    float params[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    float grads[4], exp_avg[4] = {0}, exp_avg_sq[4] = {0};
    uint64_t step = 0; /* steps taken; 0 with zeroed moments for a fresh state */
    AdoptHyper hyper = adopt_hyper_default();
    hyper.lr = 0.1;
    for (int i = 0; i < 200; i++) {
        for (int j = 0; j < 4; j++) {
            grads[j] = 2.0f * (params[j] - 1.0f);
        }
        AdoptStatus status =
            adopt_step_f32(params, 4, grads, 4, exp_avg, 4, exp_avg_sq, 4, &step, &hyper);
        if (status != ADOPT_STATUS_OK) {
            fprintf(stderr, "adopt error %d: %s\n", (int)status, adopt_last_error_message());
            return 1;
        }
    }
    printf("after %llu steps: %.3f %.3f %.3f %.3f\n", (unsigned long long)step, params[0],
           params[1], params[2], params[3]);

    /* Mistakes are reported, and change nothing: */
    AdoptStatus status =
        adopt_step_f32(params, 4, grads, 3, exp_avg, 4, exp_avg_sq, 4, &step, &hyper);
    printf("status %d: %s\n", (int)status, adopt_last_error_message());
    return status == ADOPT_STATUS_LENGTH_MISMATCH ? 0 : 1;
}
