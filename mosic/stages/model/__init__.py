"""The MoSiC model: a timm ViT backbone, a projection head, prototypes, an EMA teacher."""
