// The file operations of the differential test that Node cannot make itself: writes through a
// shared memory mapping, renameat2 with flags, truncate(2) by path (Node's truncate opens the file),
// fallocate, O_DIRECT, SEEK_DATA/SEEK_HOLE and extended attributes. Compiled at test time by
// native-helper.ts; one operation per run.
//
//   fs-helper mmap-write PATH PPM LENGTH     LENGTH bytes of data on stdin, written at PPM
//                                            millionths of the file's size (clipped to the size:
//                                            a mapping cannot extend a file), then msync, munmap
//   fs-helper rename2 FROM TO FLAGS
//   fs-helper truncate PATH SIZE
//   fs-helper fallocate PATH MODE OFFSET LENGTH
//   fs-helper direct-write PATH OFFSET LENGTH   O_DIRECT, data on stdin; offset, length: 4 KiB multiples
//   fs-helper direct-read PATH OFFSET LENGTH    prints the bytes read and their FNV-1a hash
//   fs-helper seek PATH WHENCE OFFSET           lseek on a fresh O_RDONLY descriptor (not of a directory)
//   fs-helper setxattr PATH NAME FLAGS LENGTH   the value on stdin
//   fs-helper getxattr PATH NAME                prints the value's length and hash
//   fs-helper removexattr PATH NAME
//   fs-helper xattrs PATH...                    every attribute of each path (not following
//                                               symlinks): "I:NAME:LENGTH:HASH" or "I:!ERRNO"
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
#include <sys/xattr.h>
#include <unistd.h>

#define ALIGN 4096

static int failed(void) {
  printf("errno %d\n", errno);
  return 0;
}

static unsigned long long fnv1a(const unsigned char *p, size_t n) {
  unsigned long long h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
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

static char *aligned(size_t len) {
  void *p = NULL;
  if (posix_memalign(&p, ALIGN, len ? len : ALIGN) != 0) return NULL;
  memset(p, 0, len ? len : ALIGN);
  return p;
}

static int direct_io(int writing, const char *path, off_t off, size_t len) {
  char *buf = aligned(len);
  if (!buf) return failed();
  if (writing) read_stdin(buf, len);
  int fd = open(path, (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) return failed();
  ssize_t n = writing ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);
  if (n < 0) return failed();
  if (close(fd) < 0) return failed();
  if (writing) printf("ok %zd\n", n);
  else printf("ok %zd %016llx\n", n, fnv1a((unsigned char *)buf, (size_t)n));
  return 0;
}

static int list_xattrs(int count, char **paths) {
  static char names[65536];
  static char value[65536];
  printf("ok");
  for (int i = 0; i < count; i++) {
    ssize_t len = llistxattr(paths[i], names, sizeof names);
    if (len < 0) {
      printf(" %d:!%d", i, errno);
      continue;
    }
    // The kernel's order is the file system's: print in name order.
    const char *sorted[256];
    int n = 0;
    for (char *p = names; p < names + len && n < 256; p += strlen(p) + 1) sorted[n++] = p;
    for (int a = 1; a < n; a++)
      for (int b = a; b > 0 && strcmp(sorted[b - 1], sorted[b]) > 0; b--) {
        const char *t = sorted[b];
        sorted[b] = sorted[b - 1];
        sorted[b - 1] = t;
      }
    for (int k = 0; k < n; k++) {
      ssize_t v = lgetxattr(paths[i], sorted[k], value, sizeof value);
      if (v < 0) printf(" %d:%s:!%d", i, sorted[k], errno);
      else printf(" %d:%s:%zd:%016llx", i, sorted[k], v, fnv1a((unsigned char *)value, (size_t)v));
    }
  }
  printf("\n");
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
  if ((strcmp(op, "direct-write") == 0 || strcmp(op, "direct-read") == 0) && argc == 5) {
    return direct_io(op[7] == 'w', argv[2], (off_t)number(argv[3]), (size_t)number(argv[4]));
  }
  if (strcmp(op, "seek") == 0 && argc == 5) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return failed();
    // Directories are left out (EISDIR here): what lseek says of their holes is each file
    // system's own idea (ext4's hash-ordered ones end at LLONG_MAX, FUSE's at i_size).
    struct stat st;
    if (fstat(fd, &st) < 0) return failed();
    if (S_ISDIR(st.st_mode)) {
      errno = EISDIR;
      return failed();
    }
    off_t r = lseek(fd, (off_t)number(argv[4]), (int)number(argv[3]));
    if (r < 0) return failed();
    printf("ok %lld\n", (long long)r);
    return 0;
  }
  if (strcmp(op, "setxattr") == 0 && argc == 6) {
    size_t len = (size_t)number(argv[5]);
    char *value = malloc(len ? len : 1);
    if (!value) return failed();
    read_stdin(value, len);
    if (setxattr(argv[2], argv[3], value, len, (int)number(argv[4])) < 0) return failed();
    printf("ok\n");
    return 0;
  }
  if (strcmp(op, "getxattr") == 0 && argc == 4) {
    static char value[65536];
    ssize_t v = getxattr(argv[2], argv[3], value, sizeof value);
    if (v < 0) return failed();
    printf("ok %zd %016llx\n", v, fnv1a((unsigned char *)value, (size_t)v));
    return 0;
  }
  if (strcmp(op, "removexattr") == 0 && argc == 4) {
    if (removexattr(argv[2], argv[3]) < 0) return failed();
    printf("ok\n");
    return 0;
  }
  if (strcmp(op, "xattrs") == 0 && argc >= 2) return list_xattrs(argc - 2, argv + 2);
  fprintf(stderr, "usage: fs-helper mmap-write PATH PPM LENGTH | rename2 FROM TO FLAGS | truncate PATH SIZE |"
                  " fallocate PATH MODE OFFSET LENGTH | direct-write|direct-read PATH OFFSET LENGTH |"
                  " seek PATH WHENCE OFFSET | setxattr PATH NAME FLAGS LENGTH | getxattr|removexattr PATH NAME |"
                  " xattrs PATH...\n");
  return 2;
}
