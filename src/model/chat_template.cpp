#include "model/chat_template.h"

#include <ctime>

#include "model/unicode_bytes.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// Python's str.isspace() for one code point.
bool python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// A Jinja string literal's escapes (\n, \t, \\, \', \"); raw newlines pass through.
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    out += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
  }
  return out;
}

bool has_unescaped(std::string_view s, std::string_view chars) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (chars.find(s[i]) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

// The literal default system message of a ChatML template: the text between
// "<|im_start|>system" + newline and "<|im_end|>", when it holds no Jinja expression.
bool find_default_system(const std::string& t, std::string* out) {
  static constexpr std::string_view kOpen = "<|im_start|>system";
  for (size_t at = t.find(kOpen); at != std::string::npos; at = t.find(kOpen, at + 1)) {
    size_t start = at + kOpen.size();
    if (t.compare(start, 1, "\n") == 0) {
      start += 1;
    } else if (t.compare(start, 2, "\\n") == 0) {
      start += 2;
    } else {
      continue;
    }
    const size_t end = t.find("<|im_end|>", start);
    if (end == std::string::npos) continue;
    const std::string_view body(t.data() + start, end - start);
    // An unescaped quote, '+', '{' or '}' means the text is built by Jinja (e.g. from
    // messages), not a literal we can copy.
    if (has_unescaped(body, "'\"+{}")) continue;
    *out = unescape_jinja(body);
    return true;
  }
  return false;
}

// The date a Llama 3.1-style template writes: today for templates that call
// strftime_now (Llama 3.2 and later, as transformers renders them), else the literal
// fallback `set date_string = "..."`.
std::string llama_date(const std::string& t) {
  if (contains(t, "strftime_now")) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%d %b %Y", &local);
    return buf;
  }
  static constexpr std::string_view kSet = "date_string = \"";
  const size_t at = t.find(kSet);
  if (at == std::string::npos) return "26 Jul 2024";
  const size_t start = at + kSet.size(), end = t.find('"', start);
  SR_CHECK(end != std::string::npos, "chat template: unterminated date_string literal");
  return t.substr(start, end - start);
}

void llama_turn(std::string& out, const std::string& role, std::string_view content) {
  out += "<|start_header_id|>";
  out += role;
  out += "<|end_header_id|>\n\n";
  out += python_strip(content);
  out += "<|eot_id|>";
}

}  // namespace

std::string_view python_strip(std::string_view s) {
  auto space_at = [&](size_t i, size_t* len) {
    uint32_t cp = 0;
    *len = unicode::decode_utf8(s.data() + i, s.size() - i, &cp);
    return *len != 0 && python_space(cp);
  };
  size_t begin = 0, len = 0;
  while (begin < s.size() && space_at(begin, &len)) begin += len;
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back up to the start of the last character
    while (start > begin && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
    if (!space_at(start, &len) || start + len != end) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

ChatTemplateInfo recognise_chat_template(const std::string& t) {
  SR_CHECK(!t.empty(), "chat template: the model has no tokenizer.chat_template (expected a ChatML or Llama 3 template)");
  ChatTemplateInfo info;
  if (contains(t, "<|im_start|>")) {
    info.kind = ChatTemplateKind::ChatML;
    info.has_default_system = find_default_system(t, &info.default_system);
    return info;
  }
  if (contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>") && contains(t, "<|eot_id|>")) {
    info.starts_with_bos = contains(t, "bos_token");
    if (contains(t, "Cutting Knowledge Date")) {
      info.kind = ChatTemplateKind::Llama31;
      info.date = llama_date(t);
    } else {
      info.kind = ChatTemplateKind::Llama3;
    }
    return info;
  }
  fail("chat template: not recognised (supported: ChatML with <|im_start|>, Llama 3 with <|start_header_id|>); "
       "the template starts with \"{}\"",
       t.substr(0, 80));
}

std::string render_chat_template(const ChatTemplateInfo& info, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::string& bos_text) {
  std::string out;
  switch (info.kind) {
    case ChatTemplateKind::ChatML:
      if (info.has_default_system && !messages.empty() && messages[0].role != "system") {
        out += "<|im_start|>system\n" + info.default_system + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;

    case ChatTemplateKind::Llama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0 && info.starts_with_bos) out += bos_text;
        llama_turn(out, messages[i].role, messages[i].content);
      }
      break;

    case ChatTemplateKind::Llama31: {
      size_t first = 0;
      std::string_view system;
      if (!messages.empty() && messages[0].role == "system") {
        system = python_strip(messages[0].content);
        first = 1;
      }
      if (info.starts_with_bos) out += bos_text;
      out += "<|start_header_id|>system<|end_header_id|>\n\n";
      out += "Cutting Knowledge Date: December 2023\n";
      out += "Today Date: " + info.date + "\n\n";
      out += system;
      out += "<|eot_id|>";
      for (size_t i = first; i < messages.size(); ++i) {
        const std::string& role = messages[i].role;
        // Tool turns are rendered as JSON by the real template; we have no tool calls.
        SR_CHECK(role != "tool" && role != "ipython",
                 "chat template: role \"{}\" (tool output) is not supported for Llama 3.1 templates", role);
        llama_turn(out, role, messages[i].content);
      }
      break;
    }
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

}  // namespace sinkrouter
