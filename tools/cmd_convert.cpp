// trick convert IN -o OUT.safetensors [--model NAME]: PyTorch .pth (zip or legacy) or
// safetensors weights in, float32 safetensors out, same key names and PyTorch's layouts
// (OIHW conv weights, fc (out, in)); the model loader permutes to trick's layouts later.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "models/safetensors.h"
#include "models/zoo.h"
#include "tools/command.h"
#include "tools/lib/pth.h"

namespace trick::cmd_convert {
namespace {

struct ConvertOptions {
  std::string input, output, model;
};

std::string basename_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The architecture the tensor names belong to (models/zoo.h), or "unknown".
std::string detect_model(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  const std::string name = model_name_from_keys([&](const std::string& key) {
    for (const auto& [n, t] : tensors)
      if (n == key) return true;
    return false;
  });
  return name.empty() ? "unknown" : name;
}

int run_convert(const ConvertOptions& opt) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  int64_t skipped = 0;
  std::string skipped_names;  // the first few, for the summary
  auto skip = [&](const std::string& name) {
    if (skipped < 2) skipped_names += cat(skipped ? ", " : "", name);
    ++skipped;
  };
  std::string format;
  switch (detect_weight_format(opt.input)) {
    case WeightFormat::PthZip:
    case WeightFormat::PthLegacy: {
      StateDictFile sd = load_pth(opt.input);
      format = ".pth " + sd.format;
      tensors = std::move(sd.tensors);
      for (const auto& ig : sd.ignored) skip(ig.name);
      break;
    }
    case WeightFormat::Safetensors: {
      const SafetensorsFile f = SafetensorsFile::open(opt.input);
      format = "safetensors";
      for (const std::string& name : f.names()) {
        if (f.info(name).is_float())
          tensors.emplace_back(name, f.read_f32(name));
        else
          skip(name);
      }
      break;
    }
    case WeightFormat::Unknown:
      fail(opt.input, ": not a PyTorch .pth (zip or legacy pickle) or safetensors file");
  }
  TRICK_CHECK(!tensors.empty(), opt.input, ": holds no floating-point tensors");

  const std::string detected = detect_model(tensors);
  const std::string model = opt.model.empty() ? detected : opt.model;
  // A file tagged with an architecture trick knows must load as one: a missing or extra
  // tensor, a wrong shape or a NaN fails here, naming the input, not when the output is used.
  if (model == detected && model != "unknown") {
    StateDict state;
    for (const auto& [name, t] : tensors) state[name] = t;
    model_from_state_dict(model, std::move(state), opt.input);
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"model", model}, {"source", basename_of(opt.input)}, {"converted_by", "trick"}};
  write_safetensors(opt.output, tensors, metadata);

  int64_t parameters = 0;
  for (const auto& [name, t] : tensors) parameters += t.numel();
  std::string skipped_text;
  if (skipped)
    skipped_text = cat("; skipped ", skipped, " integer tensor", skipped == 1 ? "" : "s", " (", skipped_names,
                       skipped > 2 ? ", ..." : "", ")");
  std::printf("converted %s (%s, model %s): %zu tensors, %lld parameters -> %s%s\n", opt.input.c_str(), format.c_str(),
              model.c_str(), tensors.size(), static_cast<long long>(parameters), opt.output.c_str(),
              skipped_text.c_str());
  return 0;
}

const bool registered = register_command(
    {"convert", "Convert PyTorch .pth (zip or legacy) or safetensors weights to float32 safetensors",
     [](CLI::App& app) {
       auto opt = std::make_shared<ConvertOptions>();
       // No CLI11 file checks: a bad input is reported as "error: <file>: <problem>", exit 1.
       app.add_option("input", opt->input, "Weights to read: .pth (torch.save'd state dict) or .safetensors")
           ->required();
       app.add_option("-o,--output", opt->output, "The safetensors file to write (written atomically)")->required();
       app.add_option("--model", opt->model,
                      "Model name for the metadata (default: inception_v3 if its keys are present, else unknown)");
       return [opt] { return run_convert(*opt); };
     },
     40});

}  // namespace
}  // namespace trick::cmd_convert
