// placeholder until KilnImage lands
