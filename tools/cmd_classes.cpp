// trick classes: list the class names (what --target accepts), optionally only those
// containing a text.
#include <cstdio>
#include <string>

#include "models/labels.h"
#include "tensor/error.h"
#include "tools/command.h"

namespace trick::cmd_classes {
namespace {

struct Options {
  std::string search, labels = "imagenet";
};

int run(const Options& o) {
  const std::vector<std::string>* classes = nullptr;
  if (o.labels == "imagenet") classes = &imagenet_classes();
  else if (o.labels == "fashion-mnist") classes = &fashion_mnist_classes();
  else fail("--labels: expected 'imagenet' or 'fashion-mnist', got '", o.labels, "'");
  const std::vector<int> ids = search_classes(o.search, *classes);
  for (int i : ids) std::printf("%4d  %s\n", i, (*classes)[i].c_str());
  if (ids.empty()) {
    std::fprintf(stderr, "no class name contains '%s'\n", o.search.c_str());
    return 1;
  }
  return 0;
}

const bool registered = register_command({"classes", "List the class names a target can be given as",
                                          [](CLI::App& app) {
                                            auto o = std::make_shared<Options>();
                                            app.add_option("--search,-s", o->search,
                                                           "Only classes with a name containing this "
                                                           "(case-insensitive)");
                                            app.add_option("--labels", o->labels,
                                                           "Class list: imagenet or fashion-mnist")
                                                ->capture_default_str();
                                            return [o] { return run(*o); };
                                          },
                                          80});

}  // namespace
}  // namespace trick::cmd_classes
