"""`harken demo`: the whole loop on one machine (see ``cloud.demo.story``)."""
