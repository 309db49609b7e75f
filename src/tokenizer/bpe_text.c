/* bpe_text.c — embeds data/bpe_text.txt (the public-domain training text of the BPE
 * trainer; provenance and licence in data/README.md) into the library as read-only bytes
 * with a terminating NUL, so generated models get the same vocabulary wherever they are made.
 * The assembler reads the file relative to the directory the build runs in (the repository
 * root, as the Makefile does). */
#include "tokenizer/bpe_train.h"

__asm__(".section .rodata\n"
        ".balign 16\n"
        "ds4_bpe_text_start:\n"
        ".incbin \"data/bpe_text.txt\"\n"
        "ds4_bpe_text_end:\n"
        ".byte 0\n"
        ".previous\n");

extern const char ds4_bpe_text_start[], ds4_bpe_text_end[];

const char *tok_train_text(size_t *len)
{
    *len = (size_t)(ds4_bpe_text_end - ds4_bpe_text_start);
    return ds4_bpe_text_start;
}
