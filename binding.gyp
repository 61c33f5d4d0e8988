{
  "targets": [
    {
      "target_name": "dirvisor_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/vsock.cc",
        "native/src/uv_stream.cc",
        "native/src/fuse.cc",
        "native/src/fuse_ops.cc",
        "native/src/sys.cc",
        "native/src/systemd.cc",
        "native/src/inotify.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "FUSE_USE_VERSION=34", "_GNU_SOURCE"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"]
    }
  ]
}
