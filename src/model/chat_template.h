// Chat prompts without a Jinja engine: we recognise the template families we support
// from distinctive substrings of tokenizer.chat_template and render what the Jinja
// template renders for plain (role, content) messages.
//
//   ChatML    "<|im_start|>" (SmolLM2, Qwen): "<|im_start|>{role}\n{content}<|im_end|>\n"
//             per message; a literal default system message in the template
//             ("<|im_start|>system\n...<|im_end|>") is put first when the conversation
//             does not start with a system message.
//   Llama 3   "<|start_header_id|>": bos_token, then per message
//             "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>".
//   Llama 3.1 Llama 3 plus "Cutting Knowledge Date": the system block always comes first,
//             with "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sinkrouter/model/tokenizer.h"

namespace sinkrouter {

enum class ChatTemplateKind { ChatML, Llama3, Llama31 };

struct ChatTemplateInfo {
  ChatTemplateKind kind = ChatTemplateKind::ChatML;
  bool has_default_system = false;  // ChatML: put default_system first when none is given
  std::string default_system;
  bool starts_with_bos = false;  // the template writes bos_token itself (Llama 3)
  std::string date;              // Llama 3.1: "Today Date: {date}"
};

// Error for an empty or unrecognised template.
ChatTemplateInfo recognise_chat_template(const std::string& chat_template);

// bos_text: the BOS token's text, written where the template writes bos_token.
std::string render_chat_template(const ChatTemplateInfo& info, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::string& bos_text);

// Python's str.strip() (Jinja's |trim): removes leading and trailing characters for which
// str.isspace() holds (Unicode White_Space plus U+001C..U+001F).
std::string_view python_strip(std::string_view s);

}  // namespace sinkrouter
