// dcpp's public API, in one header: save and load sharded state dicts (core/engine/save_load.h),
// asynchronous saves, state dicts of modules, and the offline tools (convert, inspect and
// verify, diff, safetensors export). Link //core:dcpp.
//
//   dcpp::StateDict sd;
//   sd.AddSharded("net1.weight", w, dcpp::Layout::Sharded(world, 0), rank);
//   dcpp::save(sd, dcpp::FileSystemWriter("/ckpt"));
//   dcpp::load(sd, dcpp::FileSystemReader("/ckpt"));   // in place, any layout
//
// docs/architecture.md shows the layers behind it.
#pragma once

#include "core/engine/async_save.h"
#include "core/engine/save_load.h"
#include "core/model/module_state_dict.h"
#include "core/tools/convert.h"
#include "core/tools/diff.h"
#include "core/tools/inspect.h"
#include "core/tools/safetensors_export.h"
#include "core/tools/verify.h"
