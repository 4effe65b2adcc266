/* crc32c.c: see crc32c.h.  Reflected polynomial 0x82F63B78. */
#include <config.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

static uint32_t table[256];
static int have_sse42;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
init (void)
{
  uint32_t i, j, c;

  for (i = 0; i < 256; i++) {
    c = i;
    for (j = 0; j < 8; j++)
      c = (c >> 1) ^ (c & 1 ? 0x82F63B78u : 0);
    table[i] = c;
  }
#if defined(__x86_64__)
  __builtin_cpu_init ();
  have_sse42 = __builtin_cpu_supports ("sse4.2");
#endif
  /* Tests compare both implementations by forcing the table. */
  if (getenv ("REPLICATOR_CRC32C_TABLE"))
    have_sse42 = 0;
}

static uint32_t
crc_table (uint32_t crc, const unsigned char *p, size_t len)
{
  while (len--)
    crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__ ((target ("sse4.2")))
static uint32_t
crc_sse42 (uint32_t crc, const unsigned char *p, size_t len)
{
  uint64_t c = crc;

  while (len && ((uintptr_t) p & 7)) {
    c = __builtin_ia32_crc32qi ((uint32_t) c, *p++);
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy (&w, p, 8);
    c = __builtin_ia32_crc32di (c, w);
    p += 8;
    len -= 8;
  }
  while (len--)
    c = __builtin_ia32_crc32qi ((uint32_t) c, *p++);
  return (uint32_t) c;
}
#endif

uint32_t
crc32c (uint32_t crc, const void *buf, size_t len)
{
  pthread_once (&once, init);
  crc = ~crc;
#if defined(__x86_64__)
  if (have_sse42)
    return ~crc_sse42 (crc, buf, len);
#endif
  return ~crc_table (crc, buf, len);
}
