/* A small SHA-256 (FIPS 180-4) for the namesock examples. */
#ifndef NAMESOCK_EXAMPLES_SHA256_H
#define NAMESOCK_EXAMPLES_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
/* Length of the lowercase hex digest including the terminating NUL. */
#define SHA256_HEX_LEN (2 * SHA256_DIGEST_LEN + 1)

struct sha256 {
    uint32_t state[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes in block */
};

void sha256_init(struct sha256 *ctx);
void sha256_update(struct sha256 *ctx, const void *data, size_t len);
void sha256_final(struct sha256 *ctx, uint8_t out[SHA256_DIGEST_LEN]);
/* Finishes the hash and writes it as lowercase hex, NUL-terminated. */
void sha256_final_hex(struct sha256 *ctx, char out[SHA256_HEX_LEN]);

#endif
