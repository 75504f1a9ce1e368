{
  "targets": [
    {
      "target_name": "pirl",
      "sources": [
        "native/core/data/batch_buffers.cpp",
        "native/core/data/jigsaw.cpp",
        "native/core/data/pirl_sampler.cpp",
        "native/core/data/side_stream_copy.cpp",
        "native/core/data/transforms.cpp",
        "native/core/distributed/communicator.cpp",
        "native/core/distributed/gradient_reducer.cpp",
        "native/core/dtype.cpp",
        "native/core/eval/knn.cpp",
        "native/core/io/tensor_file.cpp",
        "native/core/eval/linear_probe.cpp",
        "native/core/memory_bank.cpp",
        "native/core/model/batch_norm.cpp",
        "native/core/model/heads.cpp",
        "native/core/model/pirl_model.cpp",
        "native/core/model/state_dict.cpp",
        "native/core/model/trunk.cpp",
        "native/core/negatives/cpu/negative_streams_cpu.cpp",
        "native/core/negatives/negative_streams.cpp",
        "native/core/nce/nce.cpp",
        "native/core/nce/autograd/nce_function.cpp",
        "native/core/nce/cpu/nce_kernels_cpu.cpp",
        "native/core/pirl_loss.cpp",
        "native/core/runtime.cpp",
        "native/core/train/precision.cpp",
        "native/core/train/sgd.cpp",
        "native/core/train/step_graph.cpp",
        "native/core/train/train_state.cpp",
        "native/addon/addon.cc",
        "native/addon/data_wrap.cc",
        "native/addon/env_state.cc",
        "native/addon/eval_wrap.cc",
        "native/addon/memory_bank_wrap.cc",
        "native/addon/model_wrap.cc",
        "native/addon/nce_wrap.cc",
        "native/addon/ops_wrap.cc",
        "native/addon/options.cc",
        "native/addon/owner_calls.cc",
        "native/addon/pirl_loss_wrap.cc",
        "native/addon/runtime_wrap.cc",
        "native/addon/tensor_wrap.cc",
        "native/addon/train_wrap.cc"
      ],
      "defines": [
        "NAPI_VERSION=9",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off", "-Wno-psabi", "<!@(node scripts/libtorch.js --gyp-cflags)"],
      "ldflags": ["-fopenmp"],
      "libraries": ["<!@(node scripts/libtorch.js --gyp-libs)"]
    }
  ]
}
