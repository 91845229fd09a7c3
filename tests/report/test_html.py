"""Report pages escape what they show and embed their figures."""

from siftlm.report.html import figure, png, pyplot, table, write_page


def test_tables_escape_every_cell_and_pages_embed_figures(tmp_path):
    html = table(["a<b"], [["<script>x</script>", 3]])
    assert "&lt;script&gt;" in html and "<script>" not in html and "<td class='n'>3</td>" in html
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    page = write_page(tmp_path / "r.html", "t & u", figure(png(fig), "cap <i>")).read_text()
    assert "<title>t &amp; u</title>" in page and "data:image/png;base64," in page and "cap &lt;i&gt;" in page
