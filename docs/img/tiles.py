"""One tile of the docs' figure grids: an image without ticks, the row's name on the first column and the
item's pair and view over the first row."""


def tile(ax, image, row: int, col: int, name: str, item: dict, view: int, **imshow) -> None:
    ax.imshow(image, **({"cmap": "gray"} | imshow))
    ax.set_xticks([])
    ax.set_yticks([])
    if col == 0:
        ax.set_ylabel(name)
    if row == 0:
        ax.set_title(f"{item['ref_level']}->{item['target_level']} {item['view_names'][view]}", fontsize=9)
