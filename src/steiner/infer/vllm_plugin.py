"""vLLM reasoning-parser plugin: importing this module registers steiner's parser under "steiner".

vLLM's plugin contract is "import registers", so this module's import has that one side effect and
nothing else imports it. Use it by module name:
``--reasoning-parser-plugin steiner.infer.vllm_plugin --reasoning-parser steiner``.
"""

from steiner.infer.reasoning_parser import register_vllm_plugin

register_vllm_plugin()
