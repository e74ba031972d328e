
/*
 * A minimal TAP producer for the C unit tests of the pure core.
 * t/00-unit.t runs each test binary and relays its plan and results.
 */


#ifndef _IDV_TAP_H_INCLUDED_
#define _IDV_TAP_H_INCLUDED_


#include <stdio.h>
#include <string.h>


static int  tap_n;
static int  tap_failed;


#define tap_ok(cond, ...)                                                   \
    do {                                                                    \
        int tap_c_ = (cond) ? 1 : 0;                                        \
        printf("%sok %d - ", tap_c_ ? "" : "not ", ++tap_n);                \
        printf(__VA_ARGS__);                                                \
        printf("\n");                                                       \
        if (!tap_c_) {                                                      \
            tap_failed++;                                                   \
            printf("#   at %s line %d\n", __FILE__, __LINE__);              \
        }                                                                   \
    } while (0)


/* compare a (len, data) pair with a NUL-terminated expectation */
#define tap_is_str(len, data, exp, ...)                                     \
    do {                                                                    \
        size_t tap_l_ = strlen(exp);                                        \
        int tap_eq_ = ((size_t) (len) == tap_l_                             \
                       && memcmp((data), (exp), tap_l_) == 0);              \
        tap_ok(tap_eq_, __VA_ARGS__);                                       \
        if (!tap_eq_) {                                                     \
            printf("#        got: '%.*s'\n", (int) (len), (const char *) (data)); \
            printf("#   expected: '%s'\n", (const char *) (exp));           \
        }                                                                   \
    } while (0)


static inline int
tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}


#endif /* _IDV_TAP_H_INCLUDED_ */
