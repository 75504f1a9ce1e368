// The one reader of JavaScript options and arguments: TypeScript resolved them (lib/config.ts), so
// every key must be present with its type and every enum name must be known. A missing key, a wrong
// type or an unknown name is a TypeError naming the field — never a silent fallback to a default.
#pragma once

#include <c10/core/Device.h>
#include <napi.h>

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "../core/data/transforms.h"
#include "../core/model/pirl_model.h"
#include "../core/nce/nce.h"
#include "../core/pirl_loss.h"
#include "../core/train/precision.h"

namespace pirl::addon {

// The JavaScript names of a C++ enum, in the order TypeScript lists them.
template <typename E>
using EnumNames = std::initializer_list<std::pair<const char*, E>>;

inline const EnumNames<model::Arch> kArchNames = {
    {"resnet18", model::Arch::ResNet18}, {"resnet34", model::Arch::ResNet34}, {"resnet50", model::Arch::ResNet50}};
inline const EnumNames<model::Stem> kStemNames = {{"imagenet", model::Stem::ImageNet}, {"small", model::Stem::Small}};
inline const EnumNames<model::EmbedLayer> kEmbedLayerNames = {{"res5", model::EmbedLayer::Res5},
                                                              {"f", model::EmbedLayer::F}};
inline const EnumNames<model::StateDictScope> kScopeNames = {{"all", model::StateDictScope::All},
                                                             {"trunk", model::StateDictScope::Trunk}};
inline const EnumNames<nce::Mode> kNceModeNames = {{"nce", nce::Mode::Nce}, {"infonce", nce::Mode::InfoNce}};
inline const EnumNames<ZMode> kZModeNames = {{"frozen", ZMode::Frozen}, {"ema", ZMode::Ema}};
inline const EnumNames<data::PhotometricOps> kPhotometricOpsNames = {{"one", data::PhotometricOps::One},
                                                                     {"all", data::PhotometricOps::All}};
inline const EnumNames<train::Precision> kPrecisionNames = {
    {"fp32", train::Precision::Fp32}, {"bf16", train::Precision::Bf16}, {"fp16", train::Precision::Fp16}};

// Positional arguments; `name` is what errors call them.
Napi::Object AsObject(Napi::Value value, const std::string& name);
Napi::Array AsArray(Napi::Value value, const std::string& name);
double AsDouble(Napi::Value value, const std::string& name);  // a finite number
int64_t AsInt64(Napi::Value value, const std::string& name);  // an integral number in ±2^53
bool AsBool(Napi::Value value, const std::string& name);
std::string AsString(Napi::Value value, const std::string& name);
// 'cpu', 'cuda' or 'cuda:N'; CUDA only when this libtorch has it.
c10::Device AsDevice(Napi::Value value, const std::string& name);

[[noreturn]] void throwUnknownName(const std::string& name, const std::string& got, const std::string& allowed);

template <typename E>
E AsEnum(Napi::Value value, const std::string& name, const EnumNames<E>& names) {
  const std::string got = AsString(value, name);
  std::string allowed;
  for (const auto& [text, e] : names) {
    if (got == text) return e;
    allowed += (allowed.empty() ? "'" : ", '") + std::string(text) + "'";
  }
  throwUnknownName(name, got, allowed);
}

// The attribute `key` of an options object, named "<name>.<key>" in errors; missing is a TypeError.
Napi::Value Attr(const Napi::Object& object, const char* key, const std::string& name);

inline double AttrAsDouble(const Napi::Object& o, const char* key, const std::string& name) {
  return AsDouble(Attr(o, key, name), name + "." + key);
}
inline int64_t AttrAsInt64(const Napi::Object& o, const char* key, const std::string& name) {
  return AsInt64(Attr(o, key, name), name + "." + key);
}
inline std::string AttrAsString(const Napi::Object& o, const char* key, const std::string& name) {
  return AsString(Attr(o, key, name), name + "." + key);
}
inline bool AttrAsBool(const Napi::Object& o, const char* key, const std::string& name) {
  return AsBool(Attr(o, key, name), name + "." + key);
}
template <typename E>
E AttrAsEnum(const Napi::Object& o, const char* key, const std::string& name, const EnumNames<E>& names) {
  return AsEnum(Attr(o, key, name), name + "." + key, names);
}

}  // namespace pirl::addon
