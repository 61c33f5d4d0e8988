// The file operations of the differential test that Node cannot make itself: writes through a
// shared memory mapping, renameat2 with flags, truncate(2) by path (Node's truncate opens the file),
// fallocate, O_DIRECT, SEEK_DATA/SEEK_HOLE and extended attributes. Compiled at test time by
// native-helper.ts.
//
// `fs-helper serve` reads one command per line on stdin (words separated by single spaces; data,
// where a command takes some, follows its line) and answers each with one line on stdout. It is
// started before the test opens anything on the mount and then serves the whole run: a process
// started later would inherit the test's descriptors on the mount, and closing them at its exec
// sends FLUSH requests the test did not make (and waits for a host agent that may be restarting).
// `fs-helper COMMAND ARGS...` runs one command, for trying things by hand.
//
//   mmap-write PATH PPM LENGTH      LENGTH bytes of data, written at PPM millionths of the file's
//                                   size (clipped to the size: a mapping cannot extend a file),
//                                   then msync, munmap
//   rename2 FROM TO FLAGS
//   truncate PATH SIZE
//   fallocate PATH MODE OFFSET LENGTH
//   direct-write PATH OFFSET LENGTH O_DIRECT, LENGTH bytes of data; offset, length: 4 KiB multiples
//   direct-read PATH OFFSET LENGTH  prints the bytes read and their FNV-1a hash
//   seek PATH WHENCE OFFSET         lseek on a fresh O_RDONLY descriptor (not of a directory)
//   setxattr PATH NAME FLAGS LENGTH LENGTH bytes of data: the value
//   getxattr PATH NAME              prints the value's length and hash
//   removexattr PATH NAME
//   xattrs PATH...                  every attribute of each path (not following symlinks):
//                                   "I:NAME:LENGTH:HASH", or "I:!ERRNO" if it cannot be listed
//
// Each answer is "ok [values]" or "errno N"; a malformed command ends the process with status 2.
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
#define MAX_WORDS 256

static void usage(const char *why) {
  fprintf(stderr, "fs-helper: %s\n", why);
  exit(2);
}

/** Answers with errno (and closes `fd` if one is open). */
static void failed(int fd) {
  int e = errno;
  if (fd >= 0) close(fd);
  printf("errno %d\n", e);
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
  if (errno || *s == '\0' || *end != '\0' || v < 0) usage("bad number");
  return v;
}

/** A zeroed buffer of `len` bytes, aligned for O_DIRECT. */
static char *aligned(size_t len) {
  void *p = NULL;
  if (posix_memalign(&p, ALIGN, len ? len : ALIGN) != 0) usage("out of memory");
  memset(p, 0, len ? len : ALIGN);
  return p;
}

/** The `len` bytes of data that follow a command. */
static char *data(size_t len) {
  char *p = aligned(len);
  if (len && fread(p, 1, len, stdin) != len) usage("data ended early");
  return p;
}

static void mmap_write(const char *path, long long ppm, const char *buf, size_t len) {
  int fd = open(path, O_RDWR);
  if (fd < 0) return failed(-1);
  struct stat st;
  if (fstat(fd, &st) < 0) return failed(fd);
  if (st.st_size == 0 || len == 0) {
    close(fd);
    printf("ok 0 0\n");
    return;
  }
  off_t off = (off_t)(st.st_size * ppm / 1000000);
  size_t n = len < (size_t)(st.st_size - off) ? len : (size_t)(st.st_size - off);
  off_t start = off & ~(off_t)(sysconf(_SC_PAGESIZE) - 1);
  size_t maplen = (size_t)(off - start) + n;
  char *m = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, start);
  if (m == MAP_FAILED) return failed(fd);
  memcpy(m + (off - start), buf, n);
  int synced = msync(m, maplen, MS_SYNC);
  int e = errno;
  munmap(m, maplen);
  errno = e;
  if (synced < 0) return failed(fd);
  if (close(fd) < 0) return failed(-1);
  printf("ok %lld %zu\n", (long long)off, n);
}

static void direct_io(int writing, const char *path, off_t off, char *buf, size_t len) {
  int fd = open(path, (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) return failed(-1);
  ssize_t n = writing ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);
  if (n < 0) return failed(fd);
  if (close(fd) < 0) return failed(-1);
  if (writing) printf("ok %zd\n", n);
  else printf("ok %zd %016llx\n", n, fnv1a((unsigned char *)buf, (size_t)n));
}

static void seek(const char *path, int whence, off_t off) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return failed(-1);
  // Directories are left out (EISDIR here): what lseek says of their holes is each file
  // system's own idea (ext4's hash-ordered ones end at LLONG_MAX, FUSE's at i_size).
  struct stat st;
  if (fstat(fd, &st) < 0) return failed(fd);
  if (S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    return failed(fd);
  }
  off_t r = lseek(fd, off, whence);
  if (r < 0) return failed(fd);
  close(fd);
  printf("ok %lld\n", (long long)r);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void list_xattrs(int count, char **paths) {
  static char names[65536];
  static char value[65536];
  printf("ok");
  for (int i = 0; i < count; i++) {
    ssize_t len = llistxattr(paths[i], names, sizeof names);
    if (len < 0) {
      printf(" %d:!%d", i, errno);
      continue;
    }
    // The kernel lists them in the file system's order: print them in name order.
    const char *sorted[256];
    int n = 0;
    for (char *p = names; p < names + len && n < 256; p += strlen(p) + 1) sorted[n++] = p;
    qsort(sorted, (size_t)n, sizeof sorted[0], by_name);
    for (int k = 0; k < n; k++) {
      ssize_t v = lgetxattr(paths[i], sorted[k], value, sizeof value);
      if (v < 0) printf(" %d:%s:!%d", i, sorted[k], errno);
      else printf(" %d:%s:%zd:%016llx", i, sorted[k], v, fnv1a((unsigned char *)value, (size_t)v));
    }
  }
  printf("\n");
}

static void ok_or_failed(int r) {
  if (r < 0) failed(-1);
  else printf("ok\n");
}

/** One command; argv[0] is its name. */
static void command(int argc, char **argv) {
  const char *op = argv[0];
  if (strcmp(op, "mmap-write") == 0 && argc == 4) {
    long long ppm = number(argv[2]);
    size_t len = (size_t)number(argv[3]);
    if (ppm >= 1000000) usage("PPM must be below 1000000");
    char *buf = data(len);
    mmap_write(argv[1], ppm, buf, len);
    free(buf);
  } else if (strcmp(op, "rename2") == 0 && argc == 4) {
    // The raw syscall: glibc's wrapper is recent, and this says exactly what is asked.
    ok_or_failed((int)syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], (unsigned)number(argv[3])));
  } else if (strcmp(op, "truncate") == 0 && argc == 3) {
    ok_or_failed(truncate(argv[1], (off_t)number(argv[2])));
  } else if (strcmp(op, "fallocate") == 0 && argc == 5) {
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return failed(-1);
    if (fallocate(fd, (int)number(argv[2]), (off_t)number(argv[3]), (off_t)number(argv[4])) < 0) return failed(fd);
    ok_or_failed(close(fd));
  } else if ((strcmp(op, "direct-write") == 0 || strcmp(op, "direct-read") == 0) && argc == 4) {
    int writing = op[7] == 'w';
    size_t len = (size_t)number(argv[3]);
    char *buf = writing ? data(len) : aligned(len);
    direct_io(writing, argv[1], (off_t)number(argv[2]), buf, len);
    free(buf);
  } else if (strcmp(op, "seek") == 0 && argc == 4) {
    seek(argv[1], (int)number(argv[2]), (off_t)number(argv[3]));
  } else if (strcmp(op, "setxattr") == 0 && argc == 5) {
    size_t len = (size_t)number(argv[4]);
    char *value = data(len);
    ok_or_failed(setxattr(argv[1], argv[2], value, len, (int)number(argv[3])));
    free(value);
  } else if (strcmp(op, "getxattr") == 0 && argc == 3) {
    static char value[65536];
    ssize_t v = getxattr(argv[1], argv[2], value, sizeof value);
    if (v < 0) return failed(-1);
    printf("ok %zd %016llx\n", v, fnv1a((unsigned char *)value, (size_t)v));
  } else if (strcmp(op, "removexattr") == 0 && argc == 3) {
    ok_or_failed(removexattr(argv[1], argv[2]));
  } else if (strcmp(op, "xattrs") == 0) {
    list_xattrs(argc - 1, argv + 1);
  } else {
    usage("unknown command or wrong number of arguments (see fs-helper.c)");
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "serve") != 0) {
    command(argc - 1, argv + 1);
    return 0;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    if (line[n - 1] == '\n') line[--n] = '\0';
    char *words[MAX_WORDS];
    int count = 0;
    for (char *w = strtok(line, " "); w; w = strtok(NULL, " ")) {
      if (count == MAX_WORDS) usage("too many words");
      words[count++] = w;
    }
    if (count == 0) usage("empty command");
    command(count, words);
    fflush(stdout);
  }
  return 0;
}
