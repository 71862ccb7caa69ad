// main() for llama.cpp's tools/batched-bench (compiled unchanged from the pinned release): the same as its own
// main.cpp, plus common_log_flush() before exit, without which the asynchronous log worker may drop the last lines
// (the results) when stdout is a pipe.
#include "log.h"

int llama_batched_bench(int argc, char ** argv);

int main(int argc, char ** argv) {
    int status = llama_batched_bench(argc, argv);
    common_log_flush(common_log_main());
    return status;
}
