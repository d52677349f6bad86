"""The nets: plain ``nn.Module``s taking ``num_classes``, one family per file, importing nothing
of ours; ``conf/model/<name>.yaml`` names ``<name>.py``'s as its ``net:``."""
