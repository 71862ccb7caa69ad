// puzzle-llama-check: llama.cpp as an independent client of Puzzle's GGUF export (llama.h public API only).
//
//   puzzle-llama-check MODEL.gguf IDS_FILE N_GREEDY [TEXT_FILE]
//
// IDS_FILE holds whitespace-separated token ids (BOS included, as the caller tokenised them). Prints one JSON line:
//   nll      mean next-token negative log-likelihood over ids[1..] (nats), computed here from llama.cpp's logits
//   count    number of predicted tokens
//   greedy   N_GREEDY greedy (argmax) continuation ids after all of IDS_FILE
//   tokens   llama.cpp's own tokenisation of TEXT_FILE with the GGUF's special-token settings (when given)
// The KV cache is kept in F32 and flash attention off so that an F32 model is compared at full precision.
#include "llama.h"
#include "ggml-backend.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int argmax(const float * logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

static void print_ids(const char * name, const std::vector<llama_token> & ids, bool comma) {
    printf("\"%s\":[", name);
    for (size_t i = 0; i < ids.size(); i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("]%s", comma ? "," : "");
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS_FILE N_GREEDY [TEXT_FILE]\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    std::ifstream ids_file(argv[2]);
    if (!ids_file) { fprintf(stderr, "%s: cannot read\n", argv[2]); return 2; }
    std::vector<llama_token> ids{std::istream_iterator<llama_token>(ids_file), std::istream_iterator<llama_token>()};
    const int n_greedy = atoi(argv[3]);
    if (ids.size() < 2) { fprintf(stderr, "%s: need at least 2 token ids, got %zu\n", argv[2], ids.size()); return 2; }

    llama_log_set(quiet_log, nullptr);
    ggml_backend_load_all();
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path, mparams);
    if (!model) { fprintf(stderr, "%s: llama.cpp could not load the model\n", model_path); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    const int n = (int) ids.size();
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = n + n_greedy + 16;
    cparams.n_batch = cparams.n_ctx;
    cparams.n_ubatch = cparams.n_ctx;
    cparams.n_threads = cparams.n_threads_batch = 1;                    // a tiny model; no thread barrier to spin on
    cparams.type_k = GGML_TYPE_F32;
    cparams.type_v = GGML_TYPE_F32;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) { fprintf(stderr, "%s: llama.cpp could not create a context\n", model_path); return 1; }

    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed on %d tokens\n", n); return 1; }

    double nll = 0;
    for (int i = 0; i + 1 < n; i++) {
        const float * logits = llama_get_logits_ith(ctx, i);
        double max = logits[0];
        for (int v = 1; v < n_vocab; v++) max = std::max(max, (double) logits[v]);
        double sum = 0;
        for (int v = 0; v < n_vocab; v++) sum += std::exp((double) logits[v] - max);
        nll -= (double) logits[ids[i + 1]] - max - std::log(sum);
    }

    std::vector<llama_token> greedy;
    llama_token next = argmax(llama_get_logits_ith(ctx, n - 1), n_vocab);
    for (int step = 0; step < n_greedy; step++) {
        greedy.push_back(next);
        if (step + 1 == n_greedy) break;
        llama_batch one = llama_batch_get_one(&next, 1);
        if (llama_decode(ctx, one) != 0) { fprintf(stderr, "llama_decode failed at greedy step %d\n", step); return 1; }
        next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    }

    std::vector<llama_token> tokens;
    if (argc > 4) {
        std::ifstream text_file(argv[4]);
        if (!text_file) { fprintf(stderr, "%s: cannot read\n", argv[4]); return 2; }
        std::stringstream buffer;
        buffer << text_file.rdbuf();
        std::string text = buffer.str();
        tokens.resize(text.size() + 16);
        int count = llama_tokenize(vocab, text.c_str(), (int) text.size(), tokens.data(), (int) tokens.size(), true, false);
        if (count < 0) { fprintf(stderr, "llama_tokenize failed (%d)\n", count); return 1; }
        tokens.resize(count);
    }

    printf("{\"n_vocab\":%d,\"nll\":%.9f,\"count\":%d,", n_vocab, nll / (n - 1), n - 1);
    print_ids("greedy", greedy, true);
    print_ids("tokens", tokens, false);
    printf("}\n");

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
