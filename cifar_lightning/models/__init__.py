"""The nets: plain ``nn.Module``s, one family per file, that import nothing from the project.

Each maps (N, 3, 32, 32) images to (N, num_classes) logits and takes ``num_classes``; a
``conf/model/<name>.yaml`` names one as its ``net:``. simple_cnn (seed 000), medium_cnn (001),
vgg (002), depthwise (003), resnet9 (004), resnet18 (torchvision's), airbench_net (speedrun).
"""
