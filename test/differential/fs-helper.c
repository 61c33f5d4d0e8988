// The file operations of the differential test that Node cannot make itself: writes through a
// shared memory mapping, renameat2 with flags, truncate(2) by path (Node's truncate opens the file)
// and fallocate. Compiled at test time by native-helper.ts; one operation per run.
//
//   fs-helper mmap-write PATH PPM LENGTH     LENGTH bytes of data on stdin, written at PPM
//                                            millionths of the file's size (clipped to the size:
//                                            a mapping cannot extend a file), then msync, munmap
//   fs-helper rename2 FROM TO FLAGS
//   fs-helper truncate PATH SIZE
//   fs-helper fallocate PATH MODE OFFSET LENGTH
//
// Prints "ok [values]" or "errno N" and exits 0; exits 2 on a usage error.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failed(void) {
  printf("errno %d\n", errno);
  return 0;
}

static long long number(const char *s) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *s == '\0' || *end != '\0' || v < 0) {
    fprintf(stderr, "fs-helper: bad number \"%s\"\n", s);
    exit(2);
  }
  return v;
}

static void read_stdin(char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(0, buf + got, len - got);
    if (n <= 0) {
      fprintf(stderr, "fs-helper: stdin ended after %zu of %zu bytes\n", got, len);
      exit(2);
    }
    got += (size_t)n;
  }
}

static int mmap_write(const char *path, long long ppm, size_t len) {
  char *data = malloc(len ? len : 1);
  if (!data) return failed();
  read_stdin(data, len);
  int fd = open(path, O_RDWR);
  if (fd < 0) return failed();
  struct stat st;
  if (fstat(fd, &st) < 0) return failed();
  if (st.st_size == 0 || len == 0) {
    close(fd);
    printf("ok 0 0\n");
    return 0;
  }
  off_t off = (off_t)(st.st_size * ppm / 1000000);
  size_t n = len < (size_t)(st.st_size - off) ? len : (size_t)(st.st_size - off);
  off_t start = off & ~(off_t)(sysconf(_SC_PAGESIZE) - 1);
  size_t maplen = (size_t)(off - start) + n;
  char *m = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, start);
  if (m == MAP_FAILED) return failed();
  memcpy(m + (off - start), data, n);
  if (msync(m, maplen, MS_SYNC) < 0) return failed();
  if (munmap(m, maplen) < 0) return failed();
  if (close(fd) < 0) return failed();
  printf("ok %lld %zu\n", (long long)off, n);
  return 0;
}

int main(int argc, char **argv) {
  const char *op = argc > 1 ? argv[1] : "";
  if (strcmp(op, "mmap-write") == 0 && argc == 5) {
    long long ppm = number(argv[3]);
    if (ppm >= 1000000) return 2;
    return mmap_write(argv[2], ppm, (size_t)number(argv[4]));
  }
  if (strcmp(op, "rename2") == 0 && argc == 5) {
    // The raw syscall: glibc's wrapper is recent, and this says exactly what is asked.
    if (syscall(SYS_renameat2, AT_FDCWD, argv[2], AT_FDCWD, argv[3], (unsigned)number(argv[4])) < 0) return failed();
    printf("ok\n");
    return 0;
  }
  if (strcmp(op, "truncate") == 0 && argc == 4) {
    if (truncate(argv[2], (off_t)number(argv[3])) < 0) return failed();
    printf("ok\n");
    return 0;
  }
  if (strcmp(op, "fallocate") == 0 && argc == 6) {
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) return failed();
    if (fallocate(fd, (int)number(argv[3]), (off_t)number(argv[4]), (off_t)number(argv[5])) < 0) return failed();
    if (close(fd) < 0) return failed();
    printf("ok\n");
    return 0;
  }
  fprintf(stderr, "usage: fs-helper mmap-write PATH PPM LENGTH | rename2 FROM TO FLAGS | truncate PATH SIZE |"
                  " fallocate PATH MODE OFFSET LENGTH\n");
  return 2;
}
