"Student editions and grading: every chapter's exercises, tiny synthetic notebooks, and one real chapter."
import argparse, ast, csv, json, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from fracture_course.grading import (BEGIN, END, STUB, InvalidNotebook, find_exercises, grade, grade_command, add_grade_args,
                                     add_student_args, student_command, read_notebook, restore_checks, student_edition,
                                     strip_solutions, parse_points, write_grades, GradingWarning, grades_table)

NBS = ROOT/'nbs'
REFERENCE_ONLY = {'index.ipynb', '90_cli.ipynb', '91_train.ipynb', '11_grading.ipynb'}
CHAPTERS = sorted(p for p in NBS.glob('*.ipynb') if p.name not in REFERENCE_ONLY)
NBDEV_TEST = shutil.which('nbdev-test', path=str(Path(sys.executable).parent)) or shutil.which('nbdev-test')

def code(*srcs): return [nbformat.v4.new_code_cell(s) for s in srcs]
def solution(name, body): return '\n'.join([f'def {name}(x):', f'    "{name} of x"', f'    {BEGIN}', f'    {body}', f'    {END}'])

@pytest.fixture
def tiny(tmp_path):
    "A 3-exercise reference notebook (1 + 2 + 3 points), its student edition, and a folder for submissions"
    ref = tmp_path/'ref'; ref.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Tiny'), *code('base = 10'),
        *code(solution('double', 'return 2 * x'), '#| points: 1\nassert double(2) == 4'),
        nbformat.v4.new_markdown_cell('Exercise 2'),
        *code(solution('add_base', 'return x + base'), '#| points: 2\nassert add_base(1) == 11\nassert add_base(0) == base'),
        *code(solution('square', 'return x * x'), '#| points: 3\nassert square(3) == 9', 'done = True')])
    nbformat.write(nb, ref/'tiny.ipynb')
    student_edition(ref, tmp_path/'student')
    return ref, tmp_path/'student'/'tiny.ipynb', tmp_path/'subs'

def hand_in(student_nb, dest, edits=None, drop=()):
    "A copy of the student edition with cell sources replaced (`edits`) and cells removed (`drop`)"
    nb = read_notebook(student_nb)
    for i, s in (edits or {}).items(): nb.cells[i].source = s
    nb.cells = [c for i, c in enumerate(nb.cells) if i not in drop]
    dest.parent.mkdir(parents=True, exist_ok=True); nbformat.write(nb, dest)
    return dest

SOLVED = {2: 'def double(x): return x + x', 5: 'def add_base(x): return base + x', 7: 'def square(x): return x ** 2'}

# --- every chapter ---

def test_student_edition_of_every_notebook(tmp_path):
    out = student_edition(NBS, tmp_path)
    assert sorted(p.name for p in out) == sorted(p.name for p in NBS.glob('*.ipynb'))
    for p in out:
        ref, stu = read_notebook(NBS/p.name), read_notebook(p)
        assert len(ref.cells) == len(stu.cells), p.name
        for r, s in zip(ref.cells, stu.cells):
            assert not any(l.strip() in (BEGIN, END) for l in s.source.splitlines()), f'{p.name}: solution marker left'
            if s.cell_type == 'code': assert s.outputs == [] and s.execution_count is None
            if not any(l.strip() == BEGIN for l in r.source.splitlines()): assert r.source == s.source, f'{p.name}: cell changed'
        if p.name not in REFERENCE_ONLY:
            assert any(STUB in c.source for c in stu.cells if c.cell_type == 'code'), f'{p.name}: no exercise stub'
        for i, c in enumerate(stu.cells):  # a stub raises when called, never when its cell defines it: the check cell must find the name
            if c.cell_type == 'code' and STUB in c.source:
                for node in ast.walk(ast.parse(c.source)):
                    if isinstance(node, ast.ClassDef):
                        assert not any(isinstance(st, ast.Raise) for st in node.body), f'{p.name} cell {i}: the stub raises while defining {node.name}'
                assert not any(isinstance(st, ast.Raise) for st in ast.parse(c.source).body), f'{p.name} cell {i}: the stub raises at the top level'

def test_every_chapter_has_three_graded_exercises():
    counts = {p.name: len(find_exercises(read_notebook(p), p.name)) for p in CHAPTERS}
    short = {k: v for k, v in counts.items() if v < 3}
    print('graded exercises per chapter:', counts)
    assert not short, f'chapters with fewer than 3 graded exercises (#| points: cells): {short}'

@pytest.mark.skipif(NBDEV_TEST is None, reason='nbdev-test is not installed (pip install nbdev)')
def test_real_chapter_student_fails_reference_passes_and_scores_full(tmp_path):
    student_edition(NBS/'00_setup.ipynb', tmp_path/'student')
    run = subprocess.run([NBDEV_TEST, str(tmp_path/'student'/'00_setup.ipynb')], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode != 0 and 'NotImplementedError' in run.stderr, run.stderr[-2000:]
    run = subprocess.run([NBDEV_TEST, str(NBS/'00_setup.ipynb')], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    shutil.copy(NBS/'00_setup.ipynb', tmp_path/'00_setup.ipynb')  # the reference itself, handed in as a submission
    (r,) = grade(tmp_path/'00_setup.ipynb', NBS, timeout=120)
    assert r['status'] == 'completed' and r['points'] == r['max_points'] > 0, r
    assert all(e['passed'] for e in r['exercises'])

# --- the student edition ---

def _bound_and_read(src:str) -> tuple[set, set]:
    "Names a cell binds (assignments, defs, imports, loop and comprehension variables, parameters) and names it reads"
    import ast
    tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
    bound, read = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name): (bound if isinstance(n.ctx, ast.Store) else read).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): bound.add(n.name)
        elif isinstance(n, ast.arg): bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)): bound |= {(a.asname or a.name).split('.')[0] for a in n.names}
    return bound, read

def test_the_student_edition_reads_no_name_that_only_a_failing_check_defines():
    "In a student edition, a check fails at its first use of the student's function: a later cell must not need what the check defines after it"
    import ast
    for path in sorted(NBS.glob('[01]*.ipynb')):
        nb = nbformat.read(path, as_version=4)
        exercise_names = {e.name for e in find_exercises(nb)}
        lost, defined = set(), set()  # names bound only after a check's first failing line; names bound anywhere else
        for i, c in enumerate(nb.cells):
            if c.cell_type != 'code': continue
            if c.source.startswith('#| points'):
                statements = ast.parse(c.source).body
                first = next((k for k, st in enumerate(statements) if exercise_names & _bound_and_read(ast.unparse(st))[1]), len(statements))
                for k, st in enumerate(statements): (lost if k >= first else defined).update(_bound_and_read(ast.unparse(st))[0])
                lost -= defined
                continue
            bound, read = _bound_and_read(c.source)
            assert not (read - bound) & lost, f"{path.name} cell {i} reads {sorted((read - bound) & lost)}, defined in a check after the student's code is called"
            defined |= bound; lost -= bound

def test_strip_keeps_signature_docstring_and_indentation():
    src = '\n'.join(['class A:', '    def f(self):', '        "doc"', f'        {BEGIN}', '        return 1', f'        {END}', '    g = 2'])
    assert strip_solutions(src) == 'class A:\n    def f(self):\n        "doc"\n        raise NotImplementedError()\n    g = 2'

@pytest.mark.parametrize('src, msg', [(f'{BEGIN}\nx = 1', 'never closed'), (f'x = 1\n{END}', 'without'),
                                      (f'{BEGIN}\n{BEGIN}\n{END}', 'inside another')])
def test_broken_markers_are_errors(src, msg):
    with pytest.raises(ValueError, match=msg): strip_solutions(src)

def test_solution_without_check_and_bad_points_are_errors(tmp_path):
    nb = nbformat.v4.new_notebook(cells=code(solution('f', 'return 1'), 'assert f(1) == 1'))
    with pytest.raises(ValueError, match="followed by a check cell"): find_exercises(nb, 'x.ipynb')
    with pytest.raises(ValueError, match='must be a number'): parse_points('#| points: lots')
    nbformat.write(nb, tmp_path/'x.ipynb')
    with pytest.raises(ValueError, match='x.ipynb, cell 0'): student_edition(tmp_path/'x.ipynb', tmp_path/'out')

def test_student_cli_and_refusing_to_overwrite_the_reference(tiny, tmp_path, capsys):
    ref, stu, _ = tiny
    p = argparse.ArgumentParser(); add_student_args(p)
    assert student_command(p.parse_args([str(ref), str(tmp_path/'cli')])) == 0
    assert 'tiny.ipynb: 3 exercise(s)' in capsys.readouterr().out
    assert read_notebook(tmp_path/'cli'/'tiny.ipynb') == read_notebook(stu)
    with pytest.raises(ValueError, match='overwrite the reference'): student_edition(ref, ref)
    (tmp_path/'none').mkdir()
    with pytest.raises(FileNotFoundError, match='no notebooks'): student_edition(tmp_path/'none', tmp_path/'o')

# --- grading ---

def test_reference_scores_full_student_edition_zero_and_failures_do_not_stop_the_run(tiny):
    ref, stu, subs = tiny
    (subs/'ref').mkdir(parents=True); shutil.copy(ref/'tiny.ipynb', subs/'ref'/'tiny.ipynb')
    hand_in(stu, subs/'blank'/'tiny.ipynb')
    hand_in(stu, subs/'partial'/'tiny.ipynb', {2: SOLVED[2], 7: SOLVED[7]})
    res = {r['student']: r for r in grade(subs, ref, timeout=30, workers=2)}
    assert [res[s]['points'] for s in ('blank', 'partial', 'ref')] == [0, 4, 6]
    assert res['ref']['max_points'] == 6 and all(r['status'] == 'completed' for r in res.values())
    assert [e['passed'] for e in res['partial']['exercises']] == [True, False, True]
    assert res['partial']['exercises'][1]['error'].startswith('NotImplementedError (line 2: assert add_base(1) == 11')

def test_weakened_moved_or_deleted_checks_are_restored(tiny):
    ref, stu, subs = tiny
    # solved 1 and 2 (wrongly), check 2 "fixed" to assert True
    hand_in(stu, subs/'a'/'tiny.ipynb', {2: SOLVED[2], 5: 'def add_base(x): return x', 6: '#| points: 2\nassert True'})
    # the same, with the check's directive removed and its cell id changed
    b = hand_in(stu, subs/'b'/'tiny.ipynb', {2: SOLVED[2], 5: 'def add_base(x): return x', 6: 'assert True'})
    nb = read_notebook(b); nb.cells[6]['id'] = 'changed1'; nbformat.write(nb, b)
    # check 2 deleted, unsolved exercise 3 with its check deleted too
    hand_in(stu, subs/'c'/'tiny.ipynb', {2: SOLVED[2], 5: 'def add_base(x): return x'}, drop=(6, 8))
    res = {r['student']: r for r in grade(subs, ref, timeout=30)}
    for s in 'abc':
        assert [e['points'] for e in res[s]['exercises']] == [1, 0, 0], (s, res[s])
        assert 'AssertionError' in res[s]['exercises'][1]['error']
    assert len(res['c']['notes']) == 2 and 'not found' in res['c']['notes'][0] and len(res['b']['notes']) == 1

def test_restore_checks_uses_reference_source_and_keeps_other_cells(tiny):
    ref, stu, _ = tiny
    exs = find_exercises(read_notebook(ref/'tiny.ipynb'))
    sub = read_notebook(stu); sub.cells[6].source = '#| points: 99\nassert True'
    sub.cells.insert(3, nbformat.v4.new_code_cell('scratch = 1'))
    nb, checks, notes = restore_checks(sub, exs)
    assert [nb.cells[i].source for i in checks] == [e.check_source for e in exs] and notes == []
    assert nb.cells[3].source == 'scratch = 1' and len(nb.cells) == len(sub.cells)

def test_timeout_crash_invalid_and_unmatched_are_reported_and_the_rest_graded(tiny, tmp_path, capsys):
    ref, stu, subs = tiny
    hand_in(stu, subs/'loop'/'tiny.ipynb', {2: SOLVED[2], 5: 'while True: pass'})
    hand_in(stu, subs/'crash'/'tiny.ipynb', {2: SOLVED[2], 5: 'import os; os._exit(3)'})
    hand_in(stu, subs/'good'/'tiny.ipynb', SOLVED)
    (subs/'broken').mkdir(); (subs/'broken'/'tiny.ipynb').write_text('{"cells": [{"cell_type": "code", ')
    (subs/'notjson').mkdir(); (subs/'notjson'/'tiny.ipynb').write_text('[1, 2]')
    hand_in(stu, subs/'good'/'other.ipynb')
    (subs/'.ipynb_checkpoints').mkdir(); hand_in(stu, subs/'.ipynb_checkpoints'/'tiny.ipynb')
    p = argparse.ArgumentParser(); add_grade_args(p)
    args = p.parse_args([str(subs), '--reference', str(ref), '--timeout', '3', '--out', str(tmp_path/'out'), '--workers', '2'])
    assert grade_command(args) == 0
    shown = capsys.readouterr().out
    doc = json.loads((tmp_path/'out'/'grades.json').read_text())
    res = {f"{r['student']}/{r['notebook']}": r for r in doc['notebooks']}
    assert sorted(res) == ['broken/tiny.ipynb', 'crash/tiny.ipynb', 'good/other.ipynb', 'good/tiny.ipynb', 'loop/tiny.ipynb', 'notjson/tiny.ipynb']
    assert res['good/tiny.ipynb']['points'] == 6
    assert res['loop/tiny.ipynb']['status'] == 'stopped' and res['loop/tiny.ipynb']['points'] == 1
    assert 'timeout' in res['loop/tiny.ipynb']['message'] and 'not run' in res['loop/tiny.ipynb']['exercises'][2]['error']
    assert res['crash/tiny.ipynb']['status'] == 'crashed' and res['crash/tiny.ipynb']['points'] == 1
    for k in ('broken/tiny.ipynb', 'notjson/tiny.ipynb'):
        assert res[k]['status'] == 'invalid' and res[k]['points'] == 0 and res[k]['max_points'] == 6
    assert 'not valid JSON' in res['broken/tiny.ipynb']['message'] and 'not a Jupyter notebook' in res['notjson/tiny.ipynb']['message']
    assert res['good/other.ipynb']['status'] == 'no reference'
    assert 'not valid JSON' in shown and 'loop/tiny.ipynb' in shown and 'Wrote' in shown
    rows = list(csv.DictReader(open(tmp_path/'out'/'grades.csv')))
    per_nb = {}
    for row in rows: per_nb[f"{row['student']}/{row['notebook']}"] = per_nb.get(f"{row['student']}/{row['notebook']}", 0) + float(row['points'])
    assert per_nb == {k: r['points'] for k, r in res.items()}
    assert sum(per_nb.values()) == doc['points'] == 8 and doc['max_points'] == 30 and doc['complete'] is True

def test_bad_arguments_name_the_problem(tiny, tmp_path):
    ref, stu, subs = tiny
    with pytest.raises(FileNotFoundError, match='reference notebooks not found'): grade(subs, tmp_path/'nope')
    with pytest.raises(FileNotFoundError, match='no such folder'): grade(tmp_path/'nope', ref)
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no submitted notebooks'): grade(tmp_path/'empty', ref)
    p = argparse.ArgumentParser(); add_grade_args(p)
    with pytest.raises(ValueError, match='--timeout'): grade_command(p.parse_args([str(subs), '--timeout', '0']))
    (tmp_path/'bad.ipynb').write_text('nope')
    with pytest.raises(InvalidNotebook, match='bad.ipynb: not valid JSON'): read_notebook(tmp_path/'bad.ipynb')

def test_output_folders_that_cannot_be_made_are_refused_before_any_grading(tiny, tmp_path, monkeypatch):
    ref, stu, subs = tiny
    hand_in(stu, subs/'a'/'tiny.ipynb', SOLVED)
    (tmp_path/'afile').write_text('not a folder')
    with pytest.raises(ValueError, match='afile: cannot make this folder'): student_edition(ref, tmp_path/'afile')
    import fracture_course.grading as g
    monkeypatch.setattr(g, 'grade', lambda *a, **k: pytest.fail('graded before checking --out'))
    p = argparse.ArgumentParser(); add_grade_args(p)
    with pytest.raises(ValueError, match='--out .*afile: cannot make this folder'):
        grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'afile')]))

def test_a_submission_that_kills_the_grader_loses_no_grade_made_before_it(tiny, tmp_path):
    "The grader is no sandbox (a cell can kill it), but every record made before is already in grades.json and grades-partial.csv"
    ref, stu, subs = tiny
    hand_in(stu, subs/'a_good'/'tiny.ipynb', SOLVED)
    hand_in(stu, subs/'b_killer'/'tiny.ipynb', {**SOLVED, 2: 'import os; os.kill(os.getppid(), 9)'})
    cli = Path(sys.executable).parent/'fracture-course'
    r = subprocess.run([str(cli), 'grade', str(subs), '--reference', str(ref), '--out', str(tmp_path/'out')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stdout + r.stderr  # killed by the submission, before printing the table
    doc = json.loads((tmp_path/'out'/'grades.json').read_text())
    assert doc['complete'] is False and [n['student'] for n in doc['notebooks']] == ['a_good'] and doc['points'] == 6
    rows = list(csv.DictReader(open(tmp_path/'out'/'grades-partial.csv')))
    assert {r['student'] for r in rows} == {'a_good'} and sum(float(r['points']) for r in rows) == 6
    assert not (tmp_path/'out'/'grades.csv').exists()  # no CSV that a platform could import as the whole class
    assert not list((tmp_path/'out').glob('.*.tmp'))

def test_a_progress_write_that_fails_warns_once_and_grading_goes_on(tiny, tmp_path, monkeypatch, capsys):
    "grades.csv held open (a spreadsheet on Windows): the grades made so far cannot be saved; warn once, grade everything, write at the end"
    ref, stu, subs = tiny
    for who in ('a', 'b', 'c'): hand_in(stu, subs/who/'tiny.ipynb', SOLVED)
    import fracture_course.grading as g
    real = g.write_grades
    def locked(results, out_dir, complete=True, **info):
        if not complete: raise PermissionError(13, 'Permission denied', str(tmp_path/'out'/'grades-partial.csv'))
        return real(results, out_dir, complete, **info)
    monkeypatch.setattr(g, 'write_grades', locked)
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out'), '--workers', '2'])) == 0
    err = capsys.readouterr().err
    assert err.count('warning: cannot update the grades') == 1 and 'grading goes on' in err
    doc = json.loads((tmp_path/'out'/'grades.json').read_text())
    assert doc['complete'] is True and doc['points'] == 18 and len(doc['notebooks']) == 3
    assert (tmp_path/'out'/'grades.csv').is_file() and not (tmp_path/'out'/'grades-partial.csv').exists()

def test_a_final_write_that_fails_writes_the_grades_under_another_name(tiny, tmp_path, monkeypatch, capsys):
    "grades.csv held open until grading ends: the grades go to grades-<time>.json/.csv, never lost, and no .tmp file is left"
    import os
    ref, stu, subs = tiny
    hand_in(stu, subs/'a'/'tiny.ipynb', SOLVED)
    real_replace = os.replace
    def replace(src, dst):
        if Path(dst).name == 'grades.csv': raise PermissionError(13, 'Permission denied', str(dst))
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out')])) == 0
    cap = capsys.readouterr()
    assert 'cannot write' in cap.err and 'grades.csv' in cap.err
    alt = list((tmp_path/'out').glob('grades-*.csv'))
    assert len(alt) == 1 and sum(float(r['points']) for r in csv.DictReader(open(alt[0]))) == 6 and str(alt[0]) in cap.out
    assert not list((tmp_path/'out').glob('.*.tmp'))

def test_a_malformed_submission_is_graded_invalid_and_the_class_goes_on(tiny, tmp_path, capsys):
    "A code cell without a source (nbformat reads it, Jupyter never writes it): that student's record says so, the others are graded; fractional timeouts work"
    ref, stu, subs = tiny
    hand_in(stu, subs/'a_good'/'tiny.ipynb', SOLVED)
    (subs/'b_odd').mkdir(parents=True)
    (subs/'b_odd'/'tiny.ipynb').write_text('{"cells": [{"cell_type": "code", "id": "c0", "metadata": {}, "outputs": []}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out'), '--timeout', '2.5'])) == 0
    res = {r['student']: r for r in json.loads((tmp_path/'out'/'grades.json').read_text())['notebooks']}
    assert res['a_good']['points'] == 6 and res['b_odd']['status'] == 'invalid' and 'cell 0 is malformed' in res['b_odd']['message']
    for bad in ('nan', 'inf', '0'):
        if bad != '0':
            with pytest.raises(ValueError, match='--timeout must be a positive number'): grade_command(p.parse_args([str(subs), '--timeout', bad]))

def test_points_must_be_finite_and_near_miss_markers_are_refused(tmp_path):
    "A marker a little off (a comment after it, lower case, ## instead of ###) would publish the solution: refused with the line"
    with pytest.raises(ValueError, match='finite number'): parse_points('#| points: nan')
    with pytest.raises(ValueError, match='finite number'): parse_points('#| points: inf')
    for marker in ('### BEGIN SOLUTION  # answer', '### begin solution', '###BEGIN SOLUTION', '## BEGIN SOLUTION', '### END SOLUTION!'):
        src = '\n'.join(['def f(x):', f'    {marker}', '    return 42', f'    {END}' if 'BEGIN' in marker.upper() else f'    {BEGIN}'])
        with pytest.raises(ValueError, match='looks like a solution marker but is not one'): strip_solutions(src, 'nb, cell 3')

def test_student_edition_does_not_replace_different_work_without_overwrite(tiny, tmp_path, capsys):
    "A filled-in notebook where the edition would go is kept unless --overwrite; rewriting an identical edition is fine"
    ref, stu, subs = tiny
    work = hand_in(stu, tmp_path/'work'/'tiny.ipynb', SOLVED)
    before = work.read_text()
    p = argparse.ArgumentParser(); add_student_args(p)
    with pytest.raises(ValueError, match="1 notebook\\(s\\) there differ from the student edition \\(tiny.ipynb\\).*--overwrite"):
        student_command(p.parse_args([str(ref), str(tmp_path/'work')]))
    assert work.read_text() == before
    assert student_command(p.parse_args([str(ref), str(tmp_path/'work'), '--overwrite'])) == 0 and read_notebook(work) == read_notebook(stu)
    assert student_command(p.parse_args([str(ref), str(tmp_path/'work')])) == 0  # the same edition again: nothing to protect


def test_what_a_submission_writes_on_disk_changes_nothing_graded_and_is_named(tiny):
    "A notebook that rewrites the reference checks, and another student's file, before they are graded: both graded as read first"
    import warnings as w
    from fracture_course.grading import GradingWarning
    ref, stu, subs = tiny
    blank = f"'#| points: 1\\\\nassert True'"
    attack = (f"import json, pathlib\n"
              f"for p in [pathlib.Path({str(ref/'tiny.ipynb')!r}), pathlib.Path({str(subs/'zz'/'tiny.ipynb')!r})]:\n"
              f"    nb = json.loads(p.read_text())\n"
              f"    for c in nb['cells']:\n"
              f"        if ''.join(c['source']).startswith('#| points'): c['source'] = 'assert True'\n"
              f"        if 'NotImplementedError' in ''.join(c['source']): c['source'] = 'def double(x): return 2 * x\\ndef add_base(x): return x + 10\\ndef square(x): return x * x'\n"
              f"    p.write_text(json.dumps(nb))")
    hand_in(stu, subs/'aa'/'tiny.ipynb', {1: attack})  # graded first (names are sorted)
    hand_in(stu, subs/'zz'/'tiny.ipynb')              # the untouched student edition
    with w.catch_warnings(record=True) as caught:
        w.simplefilter('always')
        res = grade(subs, ref, timeout=60)
    assert [(r['student'], r['points']) for r in res] == [('aa', 0), ('zz', 0)]
    assert any('changed on disk while the class was graded' in n for n in res[1]['notes'])
    named = sorted(Path(str(c.message).split(' changed')[0]).parent.name for c in caught if issubclass(c.category, GradingWarning))
    assert named == ['ref', 'zz']


def test_checks_emptied_by_an_input_transformer_score_nothing(tiny):
    ref, stu, subs = tiny
    hand_in(stu, subs/'eve'/'tiny.ipynb', {1: 'get_ipython().input_transformers_cleanup.append(lambda lines: [])'})
    hand_in(stu, subs/'ida'/'tiny.ipynb', {1: 'base = 10\nget_ipython().input_transformers_cleanup.append(lambda lines: lines)', **SOLVED})  # harmless
    res = grade(subs, ref, timeout=60)
    assert [(r['student'], r['points']) for r in res] == [('eve', 0), ('ida', 6)]
    assert all('did not run to its end' in e['error'] for e in res[0]['exercises'])


def test_a_renamed_submission_names_its_likely_reference_and_format_3_notebooks_are_read(tiny, tmp_path):
    ref, stu, subs = tiny
    hand_in(stu, subs/'al'/'tiny-Copy1.ipynb', SOLVED)
    res = grade(subs, ref, timeout=60)
    assert res[0]['status'] == 'no reference' and 'is it tiny.ipynb renamed? Rename it and grade again' in res[0]['message']
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(cells=[nbformat.v3.new_code_cell(input='x = 1')])])
    (tmp_path/'old.ipynb').write_text(nbformat.writes(v3, version=3))
    nb = read_notebook(tmp_path/'old.ipynb')
    assert nb.nbformat == 4 and nb.cells[0].source == 'x = 1'


def test_a_dangling_link_among_the_submissions_is_graded_invalid_and_the_class_goes_on(tiny):
    ref, stu, subs = tiny
    hand_in(stu, subs/'ann'/'tiny.ipynb', SOLVED)
    (subs/'bo').mkdir(parents=True); (subs/'bo'/'tiny.ipynb').symlink_to(subs/'gone.ipynb')
    res = grade(subs, ref, timeout=60)
    assert [(r['student'], r['status'], r['points']) for r in res] == [('ann', 'completed', 6), ('bo', 'invalid', 0)]
    assert 'cannot be read' in res[1]['message'] and 'submit it again' in res[1]['message']

def test_what_a_student_did_not_hand_in_counts_zero_and_other_files_are_named(tiny, tmp_path):
    "Totals are out of the same maximum for everyone: a missing notebook is a 0-point record, a student with no notebook is reported, other files are named"
    ref, stu, subs = tiny
    nbformat.write(nbformat.v4.new_notebook(cells=code(solution('one', 'return 1'), '#| points: 2\nassert one(0) == 1')), ref/'second.ipynb')
    hand_in(stu, subs/'ada'/'tiny.ipynb', SOLVED)
    shutil.copy(ref/'second.ipynb', subs/'ada'/'second.ipynb')
    hand_in(stu, subs/'bob'/'tiny.IPYNB', SOLVED)  # the suffix in capitals: still a notebook
    (subs/'cy').mkdir(); (subs/'cy'/'tiny.py').write_text('def double(x): return 2 * x\n')
    with pytest.warns(GradingWarning, match=r'1 file\(s\) in .* are not notebooks and were not graded: cy/tiny.py'):
        res = grade(subs, ref, timeout=60)
    got = [(r['student'], r['notebook'], r['status'], r['points'], r['max_points']) for r in res]
    assert got == [('ada', 'second.ipynb', 'completed', 2, 2), ('ada', 'tiny.ipynb', 'completed', 6, 6),
                   ('bob', 'second.ipynb', 'missing', 0, 2), ('bob', 'tiny.IPYNB', 'completed', 6, 6),  # graded against tiny.ipynb
                   ('cy', 'second.ipynb', 'missing', 0, 2), ('cy', 'tiny.ipynb', 'missing', 0, 6)], got
    assert res[2]['message'] == 'not handed in: no second.ipynb in bob/'
    totals = grades_table(res).split('Totals:')[1]
    assert totals.count('8/8') == 1 and totals.count('6/8') == 1 and totals.count('0/8') == 1

def test_a_flood_of_output_stops_the_notebook_and_slow_cells_are_skipped(tiny, tmp_path):
    "A loop that prints forever is stopped by the output limit, long before the timeout; `#| slow` cells do not run under the grader, as under nbdev-test"
    ref, stu, subs = tiny
    edits = {**SOLVED, 1: '#| slow\nraise RuntimeError("the main job: only when asked")', 5: 'base = 10\ndef add_base(x): return base + x',
             7: 'def square(x): return x ** 2\nimport sys\nwhile True: sys.stdout.write("x" * 100_000)'}
    hand_in(stu, subs/'fl'/'tiny.ipynb', edits)
    (r,) = grade(subs, ref, timeout=300)
    assert r['status'] == 'stopped' and 'printed more than 10 MB of output' in r['message'], r
    assert [e['points'] for e in r['exercises']] == [1, 2, 0] and r['other_errors'] == 0  # the slow cell never ran
    assert len(json.dumps(r)) < 2**20  # none of the flood is kept

def test_exit_in_a_cell_stops_the_notebook_there_every_time(tiny):
    "exit() shuts the kernel down a moment after its cell: without a rule, whether the next cells ran (and scored) was a race"
    ref, stu, subs = tiny
    hand_in(stu, subs/'quits'/'tiny.ipynb', {**SOLVED, 5: SOLVED[5] + '\nexit()'})
    hand_in(stu, subs/'keeps'/'tiny.ipynb', {**SOLVED, 5: SOLVED[5] + '\nexit(keep_kernel=True)'})
    for _ in range(3):
        res = {r['student']: r for r in grade(subs, ref, timeout=30, workers=2)}
        assert res['quits']['status'] == 'stopped' and 'exit()' in res['quits']['message'], res['quits']
        assert [e['points'] for e in res['quits']['exercises']] == [1, 0, 0]  # its own check, after it, did not run
        assert res['keeps']['status'] == 'completed' and res['keeps']['points'] == 6

def test_grades_json_keeps_numbers_as_numbers_and_an_earlier_csv_is_set_aside(tiny, tmp_path, capsys):
    ref, stu, subs = tiny
    nb = read_notebook(ref/'tiny.ipynb')
    for c in nb.cells:
        if c.source.startswith('#| points'): c.source = '#| points: 0.1' + c.source[c.source.index('\n'):]
    nbformat.write(nb, ref/'tiny.ipynb')
    for s in 'abc': hand_in(stu, subs/s/'tiny.ipynb', SOLVED)
    (tmp_path/'out').mkdir(); (tmp_path/'out'/'grades.csv').write_text('student,points\nold,1\n')
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out'), '--timeout', '30'])) == 0
    doc = json.loads((tmp_path/'out'/'grades.json').read_text())
    assert doc['points'] == 0.9 and doc['notebooks'][0]['points'] == 0.3 and doc['timeout'] == 30.0  # not 0.30000000000000004, not '30.0'
    (kept,) = (tmp_path/'out').glob('grades-2*.csv')  # named after when it was written
    assert kept.read_text() == 'student,points\nold,1\n' and 'old' not in (tmp_path/'out'/'grades.csv').read_text()
    assert f'is now {kept}' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='typo/tiny.ipynb: no such notebook'): grade_command(p.parse_args([str(tmp_path/'typo'/'tiny.ipynb')]))
    assert not (tmp_path/'typo').exists()  # no stray folder made for the grades
    with pytest.raises(FileNotFoundError, match='reference notebooks not found'):  # a run that grades nothing sets nothing aside
        grade_command(p.parse_args([str(subs), '--reference', str(tmp_path/'nope'), '--out', str(tmp_path/'out')]))
    assert (tmp_path/'out'/'grades.csv').exists() and len(list((tmp_path/'out').glob('grades-2*'))) == 1
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--timeout', '30'])) == 0  # --out: the submissions folder itself
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--timeout', '30'])) == 0  # twice: the grades are not submissions
    err = capsys.readouterr().err
    assert 'not notebooks' not in err and len(list(subs.glob('grades-2*.json'))) == 1

def test_students_are_the_folders_below_the_submissions(tiny, tmp_path):
    "alice/week1 and alice/week2 are one student; a Mac's __MACOSX folder and the grades folder are nobody; bob handed in nothing"
    ref, stu, subs = tiny
    nbformat.write(nbformat.v4.new_notebook(cells=code(solution('one', 'return 1'), '#| points: 2\nassert one(0) == 1')), ref/'second.ipynb')
    hand_in(stu, subs/'alice'/'week1'/'tiny.ipynb', SOLVED); shutil.copy(ref/'second.ipynb', subs/'alice'/'week2'/'second.ipynb') if (subs/'alice'/'week2').mkdir() is None else None
    (subs/'bob').mkdir(); (subs/'__MACOSX'/'alice').mkdir(parents=True); (subs/'__MACOSX'/'alice'/'notes').write_text('x')
    (subs/'grades').mkdir(); (subs/'grades'/'grades.csv').write_text('x')
    res = grade(subs, ref, timeout=60, out_dir=subs/'grades')
    assert [(r['student'], r['notebook'], r['status']) for r in res] == [
        ('alice/week1', 'tiny.ipynb', 'completed'), ('alice/week2', 'second.ipynb', 'completed'), ('bob', 'second.ipynb', 'missing'), ('bob', 'tiny.ipynb', 'missing')]

def test_a_flood_in_a_check_and_a_progress_display_that_redraws(tmp_path):
    "A flood is blamed on the flood, not on an input transformer; output cleared as it is redrawn does not count against the limit"
    from fracture_course.grading import run_notebook
    nb = nbformat.v4.new_notebook(cells=code('from IPython.display import clear_output',
        'for i in range(30): clear_output(wait=True); print("z" * 20_000)', 'print("x" * 200_000)', 'y = 1'))
    r = run_notebook(nb, tmp_path, timeout=60, max_output_mb=0.1)
    assert r['stopped'] == (2, 'stopped', 'cell 2 printed more than 0.1 MB of output') and r['ran'] == {0, 1} and not r['errors'], r

def test_the_grader_skips_the_cells_nbdev_test_skips():
    "SKIP_FLAGS is the course's tst_flags: a cell nbdev-test leaves out (the main job's training) is left out by the grader too"
    import tomllib
    from fracture_course.grading import SKIP_FLAGS, skipped
    assert set(SKIP_FLAGS) == set(tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev']['tst_flags'].split())
    assert skipped('#| slow\nx = 1') and skipped('#| eval: false\nx') and skipped('#| hide\n#| notest\nx')
    assert not skipped('x = 1\n#| slow') and not skipped('#| export\nx = 1') and not skipped('#| points: 1\nassert True')

def test_another_chapter_under_this_name_is_noted():
    "02_data handed in as 00_setup: three checks each, so position would match them silently; the note says none of the cells is the reference's"
    ref, other = read_notebook(NBS/'00_setup.ipynb'), read_notebook(NBS/'02_data.ipynb')
    assert any('is it another notebook' in n for n in restore_checks(other, find_exercises(ref))[2])
    assert restore_checks(ref, find_exercises(ref))[2] == []

def test_a_file_that_is_not_a_notebook_is_an_error_and_in_a_folder_every_one_is_named(tiny, tmp_path, capsys):
    "Given alone, a script is refused (not graded as 0/0 of nothing); in a folder, each non-notebook is named, however many"
    ref, stu, subs = tiny
    (tmp_path/'g').mkdir(); script = tmp_path/'g'/'tiny.py'; script.write_text('def double(x): return 2 * x\n')
    p = argparse.ArgumentParser(); add_grade_args(p)
    with pytest.raises(ValueError, match=r'tiny.py: not a notebook \(the grader reads .ipynb files\)'):
        grade_command(p.parse_args([str(script), '--reference', str(ref), '--out', str(tmp_path/'never')]))
    assert not (tmp_path/'never').exists() and not list((tmp_path/'g').glob('grades*'))  # refused before anything was made
    with pytest.raises(ValueError, match='not a notebook'): grade(script, ref)
    hand_in(stu, subs/'ada'/'tiny.ipynb', SOLVED)
    extra = [f'ada/notes{i}.txt' for i in range(7)]
    for name in extra: (subs/name).write_text('x')
    with pytest.warns(GradingWarning) as caught: grade(subs, ref, timeout=60)
    (msg,) = [str(w.message) for w in caught if 'not notebooks' in str(w.message)]
    assert msg.startswith('7 file(s)') and all(name in msg for name in extra) and '...' not in msg, msg

def test_one_students_folder_of_notebooks_prints_its_total(tiny, tmp_path, capsys):
    ref, stu, subs = tiny
    nbformat.write(nbformat.v4.new_notebook(cells=code(solution('one', 'return 1'), '#| points: 2\nassert one(0) == 1')), ref/'second.ipynb')
    hand_in(stu, subs/'tiny.ipynb', SOLVED); shutil.copy(student_edition(ref/'second.ipynb', tmp_path/'st2')[0], subs/'second.ipynb')
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out'), '--timeout', '60'])) == 0
    out = capsys.readouterr().out
    assert '\nTotal: 6/8\n' in out and 'Totals:' not in out, out

def test_grades_an_earlier_run_left_among_the_submissions_are_skipped_and_named(tiny, tmp_path, capsys):
    "Last week's grades folder (or a student's --out my_grades) is not a student who handed in nothing; a grades.csv of anything else is named"
    ref, stu, subs = tiny
    hand_in(stu, subs/'ada'/'tiny.ipynb', SOLVED)
    p = argparse.ArgumentParser(); add_grade_args(p)
    assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(subs/'my_grades'), '--timeout', '60'])) == 0
    (subs/'my_grades'/'grades-partial.csv').write_text((subs/'my_grades'/'grades.csv').read_text())  # an interrupted run's too
    (subs/'bob').mkdir(); (subs/'bob'/'grades.csv').write_text('name,mark\nbob,3\n')  # not the grader's: bob's own file
    capsys.readouterr()
    with pytest.warns(GradingWarning) as caught:
        assert grade_command(p.parse_args([str(subs), '--reference', str(ref), '--out', str(tmp_path/'out'), '--timeout', '60'])) == 0
    out, err = capsys.readouterr().out, '\n'.join(str(w.message) for w in caught)
    assert 'my_grades' not in out and 'bob/tiny.ipynb' in out and '\n  bob ' in out, out
    assert ('3 file(s) in' in err and 'grades an earlier grading run wrote, not submissions, and were skipped: '
            'my_grades/grades-partial.csv, my_grades/grades.csv, my_grades/grades.json' in err), err
    assert 'not notebooks and were not graded: bob/grades.csv' in err
    doc = json.loads((tmp_path/'out'/'grades.json').read_text())
    assert {r['student'] for r in doc['notebooks']} == {'ada', 'bob'} and doc['max_points'] == 12
