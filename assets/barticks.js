/* Tick, volume and value bars are placed at their bar number (even spacing, whatever the
   time between them); the axis labels them with the bar's start time instead of the bare
   number. The start time is the first line of each candle's hover text ("start
   2024-08-08 23:55:00.000", dashboard/figures.py hover_text, in the chart's zone). About
   eight labels over the bars in view, refreshed as bars arrive and on zoom or pan. Time
   bars (a date axis) are left alone. */
(function () {
    var LABELS = 8;

    function startOf(text) {
        var m = /^start (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)/.exec(text || '');
        return m ? [m[1], m[2]] : null;
    }

    function ticks(gd) {
        var L = gd._fullLayout;
        var xa = L && L.xaxis;
        var tr = gd.data && gd.data[0];
        if (!xa || xa.type !== 'linear' || !tr || !tr.x || !tr.x.length || !tr.text) { return null; }
        var first = tr.x[0], n = tr.x.length;
        var lo = Math.max(Math.ceil(Math.min(xa.range[0], xa.range[1])), first);
        var hi = Math.min(Math.floor(Math.max(xa.range[0], xa.range[1])), first + n - 1);
        if (hi < lo) { return null; }
        var step = Math.max(1, Math.round((hi - lo) / (LABELS - 1)));
        var vals = [], texts = [], lastDay = null;
        for (var i = lo; i <= hi; i += step) {
            var s = startOf(tr.text[i - first]);
            if (!s) { continue; }
            vals.push(i);
            texts.push(s[0] !== lastDay ? s[1] + '<br>' + s[0] : s[1]);  // the date when it changes
            lastDay = s[0];
        }
        return vals.length ? {vals: vals, texts: texts} : null;
    }

    function refresh(gd) {
        var t = ticks(gd);
        if (!t) { return; }
        var ax = gd.layout.xaxis2 || {};
        if (JSON.stringify(ax.tickvals) === JSON.stringify(t.vals)
                && JSON.stringify(ax.ticktext) === JSON.stringify(t.texts)) { return; }
        window.Plotly.relayout(gd, {'xaxis2.tickmode': 'array', 'xaxis2.tickvals': t.vals,
                                    'xaxis2.ticktext': t.texts});
    }

    setInterval(function () {
        var gd = document.querySelector('#candles .js-plotly-plot');
        if (gd && gd.on && window.Plotly) { refresh(gd); }
    }, 500);
})();
