// Raw data records (RecordFile: a JSON array or JSON Lines) rendered into training texts
// (TextTemplate), as coe-prepare reads a dataset. f0 is the record file; an optional second part
// is a custom template, else the default format over the keys question and answer.
#include "coe/data/jsonl.h"
#include "coe/data/text_template.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto files = coe::fuzz::split_files(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string path = coe::fuzz::write_file("records.jsonl", files[0]);
  coe::fuzz::expect_only_coe_errors([&] {
    coe::TextTemplate text({"question", "answer"}, std::nullopt);
    if (files.size() > 1) {
      try {
        text = coe::TextTemplate({}, std::string(files[1]));
      } catch (const coe::Error&) {  // a malformed template: the records with the default one
      }
    }
    const coe::RecordFile records(path);
    for (int64_t i = 0; i < records.size(); ++i) {
      try {
        const nlohmann::json record = records.parse(i);
        const std::string rendered = text.render(record);
        const std::string prompt = text.render_prompt(record, text.keys().back());
        if (prompt.size() > rendered.size() + 1) std::abort();  // a prompt is a beginning of the text
        coe::python_strip(rendered);
        text.describe().dump();
      } catch (const coe::Error&) {  // one bad record: the others are still read (as coe-prepare does)
      }
    }
  });
  return 0;
}
