// sha256_file(): the model file is checked against its published checksum before use.
// OpenSSL's libcrypto (EVP interface) does the hashing; the file is read in 1 MiB chunks.
#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail("{}: cannot open for hashing: {}", path, std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  SR_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, "{}: cannot start SHA-256 (OpenSSL)",
           path);
  std::vector<unsigned char> buf(size_t(1) << 20);
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), file.get());
    if (n > 0) SR_CHECK(EVP_DigestUpdate(ctx.get(), buf.data(), n) == 1, "{}: SHA-256 update failed", path);
    if (n < buf.size()) {
      SR_CHECK(!std::ferror(file.get()), "{}: read error while hashing: {}", path, std::strerror(errno));
      break;
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  SR_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &len) == 1 && len == 32, "{}: SHA-256 final failed", path);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace sinkrouter
