#include "train_wrap.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/train/train_state.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "external_memory.h"
#include "memory_bank_wrap.h"
#include "model_wrap.h"
#include "options.h"
#include "pirl_loss_wrap.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// A rank's options for joining its group, from { storeFile, masterAddr, masterPort, rank, worldSize, bindAddress,
// timeoutMs, device, bindInterface, launcherStore, restartCount, terms: [{ name, value, hint }] } (lib/train/rendezvous.ts).
distributed::CommunicatorOptions readCommunicatorOptions(const Napi::Value& value, const std::string& arg) {
  const Napi::Object o = AsObject(value, arg);
  distributed::CommunicatorOptions options{
      AttrAsString(o, "storeFile", arg), AttrAsString(o, "masterAddr", arg), AttrAsInt64(o, "masterPort", arg),
      AttrAsInt64(o, "rank", arg), AttrAsInt64(o, "worldSize", arg), AttrAsString(o, "bindAddress", arg),
      AttrAsInt64(o, "timeoutMs", arg), AttrAsString(o, "device", arg), AttrAsString(o, "bindInterface", arg),
      AttrAsBool(o, "launcherStore", arg), AttrAsInt64(o, "restartCount", arg)};
  const Napi::Array terms = AsArray(Attr(o, "terms", arg), arg + ".terms");
  for (uint32_t i = 0; i < terms.Length(); ++i) {
    const std::string name = arg + ".terms[" + std::to_string(i) + "]";
    const Napi::Object t = AsObject(terms.Get(i), name);
    options.terms.push_back({AttrAsString(t, "name", name), AttrAsString(t, "value", name), AttrAsString(t, "hint", name)});
  }
  return options;
}

// failToJoin(options, why): tells the ranks meeting at options' rendezvous that this one cannot start (libuv's
// pool: it waits until they have all heard).
Napi::Value failToJoin(const Napi::CallbackInfo& info) {
  const distributed::CommunicatorOptions options = readCommunicatorOptions(info[0], "distributed");
  const std::string why = AsString(info[1], "why");
  return runVoid(
      info.Env(), [=] {
        distributed::failToJoin(options, why);
      });
}

// A trainer holds the model's state (and locks its mutex while it steps, on the model's thread) and the bank.
struct TrainerState {
  std::shared_ptr<ModelState> model;
  std::shared_ptr<MemoryBank> bank;
  std::unique_ptr<train::TrainState> train;
};

// A trainer's checkpointed state: Z, the loss scaler, the step count and the momentum buffers (on the CPU).
struct CheckpointState {
  double zImage, zJigsaw, lossScale;
  int64_t goodSteps, steps;
  std::vector<std::pair<std::string, at::Tensor>> momentum;
};

class TrainerWrap : public Napi::ObjectWrap<TrainerWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("TrainerHandle", DefineClass(env, "TrainerHandle",
                                             {InstanceMethod<&TrainerWrap::step>("step"),
                                              InstanceMethod<&TrainerWrap::distribute>("distribute"),
                                              InstanceMethod<&TrainerWrap::bankShard>("bankShard"),
                                              InstanceMethod<&TrainerWrap::shareBankShards>("shareBankShards"),
                                              InstanceMethod<&TrainerWrap::agreeToStop>("agreeToStop"),
                                              InstanceMethod<&TrainerWrap::state>("state"),
                                              InstanceMethod<&TrainerWrap::setState>("setState"),
                                              InstanceMethod<&TrainerWrap::dispose>("dispose")}));
  }

  // new TrainerHandle(model, bank, lossOptions, { momentum, weightDecay, precision, seed, cudaGraphs })
  explicit TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
    guarded(info.Env(), [&] {
      auto model = unwrapModel(info[0], "model");
      auto bank = MemoryBankWrap::unwrap(info[1], "bank");
      const PirlLossOptions loss = readPirlLossOptions(info[2], "loss");
      const Napi::Object step = AsObject(info[3], "step");
      const train::StepOptions stepOptions{
          {AttrAsDouble(step, "momentum", "step"), AttrAsDouble(step, "weightDecay", "step")},
          AttrAsEnum(step, "precision", "step", kPrecisionNames),
          static_cast<uint64_t>(AttrAsInt64(step, "seed", "step")), AttrAsBool(step, "cudaGraphs", "step")};
      std::lock_guard<std::mutex> lock(model->mutex);
      state_ = std::make_shared<TrainerState>();
      state_->model = model;
      state_->bank = bank;
      state_->train = std::make_unique<train::TrainState>(model->model, bank, loss, stepOptions);
      accounted_.account(info.Env(), model->facts.parameterBytes);  // the optimizer's momentum
      return 0;
    });
  }

 private:
  // distribute(communicatorOptions, syncBatchNorm): joins the group (a rendezvous that waits for every rank, so
  // on the model's thread) and takes rank 0's state.
  Napi::Value distribute(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const distributed::CommunicatorOptions options = readCommunicatorOptions(info[0], "distributed");
      const bool syncBatchNorm = AsBool(info[1], "syncBatchNorm");
      auto s = live();
      return runVoid(
          info.Env(), [=] {
            auto communicator = std::make_shared<distributed::Communicator>(options);
            std::lock_guard<std::mutex> lock(s->model->mutex);
            s->train->distribute(communicator, syncBatchNorm);
          }, s->model->owner);
    });
  }

  // [begin, end): the bank rows this rank embeds for bankInit 'features' (alone: all).
  Napi::Value bankShard(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto s = live();
      std::lock_guard<std::mutex> lock(s->model->mutex);
      const auto [begin, end] = s->train->bankShard();
      auto out = Napi::Array::New(info.Env(), 2);
      out.Set(0u, static_cast<double>(begin));
      out.Set(1u, static_cast<double>(end));
      return out;
    });
  }

  // Every rank's embedded shard on every replica (collectives that wait for every rank: on the model's thread).
  Napi::Value shareBankShards(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto s = live();
      return runVoid(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            s->train->shareBankShards();
          }, s->model->owner);
    });
  }

  // agreeToStop(stop): whether any rank asks to stop, once every rank has voted (a collective: on the model's thread).
  Napi::Value agreeToStop(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const bool stop = AsBool(info[0], "stop");
      auto s = live();
      return AsyncTask<bool>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            return s->train->agreeToStop(stop);
          },
          [](Napi::Env env, bool& agreed) -> Napi::Value { return Napi::Boolean::New(env, agreed); }, s->model->owner);
    });
  }

  Napi::Value step(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const at::Tensor images = TensorWrap::unwrap(info[0], "images");
      const at::Tensor patches = TensorWrap::unwrap(info[1], "patches");
      const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
      const double lr = AsDouble(info[3], "lr");
      const bool stop = AsBool(info[4], "stop");
      auto s = live();
      s->model->training = true;  // the step leaves the model in training mode (set in call order, as train())
      auto use = std::make_shared<MemoryBank::Use>(s->bank, MemoryBank::Use::Kind::Step, "trainer.step()");  // from this call on: see MemoryBank::Use
      return AsyncTask<train::StepResult>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            return s->train->step(images, patches, indices, lr, stop);
          },
          [](Napi::Env env, train::StepResult& r) -> Napi::Value {
            auto out = Napi::Object::New(env);
            out.Set("loss", r.loss);
            out.Set("lossImage", r.lossImage);
            out.Set("lossJigsaw", r.lossJigsaw);
            out.Set("gradNorm", r.gradNorm);
            out.Set("applied", r.applied);
            out.Set("stop", r.stop);
            out.Set("replayed", r.replayed);
            return out;
          },
          s->model->owner, use);
    });
  }

  // { zImage, zJigsaw, lossScale, goodSteps, steps, momentum: { names, tensors } } for a checkpoint, taken on the
  // model's thread (an embed in progress holds the model: the JavaScript thread does not wait for it).
  Napi::Value state(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto s = live();
      return AsyncTask<CheckpointState>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            CheckpointState out{s->train->loss().zImage(), s->train->loss().zJigsaw(), s->train->scaler().scale(),
                             s->train->scaler().goodSteps(), s->train->steps(), {}};
            for (const auto& [name, buffer] : s->train->sgd().momentumBuffers()) {
              out.momentum.emplace_back(name, buffer.to(at::kCPU).clone());
            }
            return out;
          },
          [](Napi::Env env, CheckpointState& t) -> Napi::Value {
            auto out = Napi::Object::New(env);
            out.Set("zImage", t.zImage);
            out.Set("zJigsaw", t.zJigsaw);
            out.Set("lossScale", t.lossScale);
            out.Set("goodSteps", static_cast<double>(t.goodSteps));
            out.Set("steps", static_cast<double>(t.steps));
            out.Set("momentum", namedTensorsToJs(env, t.momentum));
            return out;
          },
          s->model->owner);
    });
  }

  // setState({ zImage, zJigsaw, lossScale, goodSteps, steps }, names, tensors): a checkpoint's state (on the
  // model's thread, as state()).
  Napi::Value setState(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const Napi::Object o = AsObject(info[0], "state");
      CheckpointState t{AttrAsDouble(o, "zImage", "state"), AttrAsDouble(o, "zJigsaw", "state"), AttrAsDouble(o, "lossScale", "state"),
                     AttrAsInt64(o, "goodSteps", "state"), AttrAsInt64(o, "steps", "state"), readNamedTensors(info[1], info[2], "momentum")};
      auto s = live();
      return runVoid(
          info.Env(), [=] {
            std::map<std::string, at::Tensor> buffers(t.momentum.begin(), t.momentum.end());
            std::lock_guard<std::mutex> lock(s->model->mutex);
            s->train->sgd().setMomentumBuffers(buffers);
            s->train->loss().setZ(t.zImage, t.zJigsaw);
            s->train->scaler().restore(t.lossScale, t.goodSteps);
            s->train->setSteps(t.steps);
          }, s->model->owner);
    });
  }

  // Lets go of the optimizer's state, the process group and the trainer's hold on its model and bank, on the
  // model's thread after the calls queued before it (its gradient hooks and BatchNorm callbacks are the model's,
  // which the caller keeps and may be using); later calls are refused.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto s = live();
      state_.reset();
      accounted_.release();
      return runVoid(
          info.Env(), [s] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            s->train->releaseModel();
            s->train.reset();
          }, s->model->owner);
    });
  }

  std::shared_ptr<TrainerState> live() const {
    if (!state_) throw std::invalid_argument("the trainer was disposed");
    return state_;
  }

  std::shared_ptr<TrainerState> state_;
  ExternalMemory accounted_;
};

}  // namespace

void registerTrain(Napi::Env env, Napi::Object exports) {
  TrainerWrap::Init(env, exports);
  exports.Set("failToJoin", Napi::Function::New<binding<failToJoin>>(env, "failToJoin"));
}

}  // namespace pirl::addon
