"""What a finished run produces: the report, the merged model and GGUF files (with llama.cpp's pinned
tools), and the push to the Hugging Face Hub."""
